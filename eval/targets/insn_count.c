/* Instruction counter for qemu-user (TCG plugin API version 1, qemu 7.2).
 *
 * Counts every guest instruction executed (an inline add per translated block: cheap) and, each time
 * the guest calls close(MARK_FD) - a syscall that does nothing but fail with EBADF - appends the
 * running count to the file given as `out=PATH`. The host takes differences between marks.
 * Inline adds go to one counter shared by all guest threads, so counts are exact only when the guest
 * runs one thread (the on-device job pins its interpreter and BLAS to one thread).
 *
 * Profile mode (`profile=PATH,snaps=I:J:...`): every translated block also gets a counter of its own,
 * and at the marks numbered I, J, ... (0-based) the plugin appends a snapshot to PATH: a line
 * "snap K" and then "vaddr instructions" per block start address executed so far. The host takes
 * differences between snapshots and maps addresses to symbols (eval/targets/symbols.py).
 *
 * Why the API is declared here: Debian ships qemu-user without qemu-plugin.h (the header lives in
 * the qemu source package); these are the few declarations of that header this plugin uses,
 * unchanged between plugin API versions 0 and 1. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))
typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t;
struct qemu_plugin_tb;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*syscall_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                             uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7,
                             uint64_t a8);
typedef void (*udata_cb_t)(qemu_plugin_id_t id, void *userdata);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                                              uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, syscall_cb_t cb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb_t cb, void *userdata);

EXPORT int qemu_plugin_version = 1;

#define AARCH64_SYS_CLOSE 57
#define MARK_FD 0x4C495445 /* "LITE"; must match export/on_device.py */

static uint64_t insns;
static FILE *out;

/* profile mode: one record per translation (a block translated twice gets two; the host adds them) */
struct block {
    uint64_t vaddr, execs, n;
    struct block *next;
};
static struct block *blocks;
static FILE *profile;
static uint64_t marks_seen;
#define MAX_SNAPS 16
static uint64_t snaps[MAX_SNAPS];
static int n_snaps;

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &insns, n);
    if (profile) {
        struct block *b = calloc(1, sizeof *b);
        if (!b)
            abort();
        b->vaddr = qemu_plugin_tb_vaddr(tb);
        b->n = n;
        b->next = blocks;
        blocks = b;
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->execs, 1);
    }
}

static void snapshot(uint64_t k)
{
    fprintf(profile, "snap %" PRIu64 "\n", k);
    for (struct block *b = blocks; b; b = b->next)
        if (b->execs)
            fprintf(profile, "%" PRIx64 " %" PRIu64 "\n", b->vaddr, b->execs * b->n);
    fflush(profile);
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    if (num == AARCH64_SYS_CLOSE && (uint32_t)a1 == MARK_FD) {
        fprintf(out, "%" PRIu64 "\n", insns);
        fflush(out); /* a guest that crashes later still leaves every mark so far */
        for (int i = 0; profile && i < n_snaps; i++)
            if (snaps[i] == marks_seen)
                snapshot(marks_seen);
        marks_seen++;
    }
}

static void on_guest_exit(qemu_plugin_id_t id, void *userdata)
{
    fprintf(out, "total %" PRIu64 "\n", insns);
    fclose(out);
    if (profile)
        fclose(profile);
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    const char *path = NULL, *profile_path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0)
            path = argv[i] + 4;
        else if (strncmp(argv[i], "profile=", 8) == 0)
            profile_path = argv[i] + 8;
        else if (strncmp(argv[i], "snaps=", 6) == 0)
            for (char *p = argv[i] + 6, *end; *p && n_snaps < MAX_SNAPS; p = end + (*end == ':')) {
                snaps[n_snaps++] = strtoull(p, &end, 10);
                if (end == p) {
                    fprintf(stderr, "insn_count: snaps=I:J:... takes mark numbers, got %s\n", argv[i]);
                    return -1;
                }
            }
    }
    if (!path) {
        fprintf(stderr, "insn_count: needs the argument out=PATH\n");
        return -1;
    }
    out = fopen(path, "w");
    if (!out) {
        perror(path);
        return -1;
    }
    if (profile_path && !(profile = fopen(profile_path, "w"))) {
        perror(profile_path);
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, on_guest_exit, NULL);
    return 0;
}

/* edgetvm's guest-instruction counter: a qemu TCG plugin, shipped in the package so that
 * `edgetvm run --emulate` and edgetvm.emulate count instructions from an installed wheel.
 *
 * Built on first use by edgetvm.emulate.insn_count_plugin() with the host gcc:
 *     gcc -shared -fPIC -O2 -o insn_count.so qemu_insn_count.c
 * and loaded as `qemu-arm -plugin insn_count.so,out=FILE PROGRAM...`; at exit it writes
 * "guest_instructions N" to FILE (or to qemu's log without out=).
 *
 * Method: when qemu translates a translation block, ask it to add the block's instruction count
 * to one 64-bit counter, inline, every time the block runs. No callback per instruction or per
 * block runs, so counting costs little; the count is exact for one guest thread (the inline add
 * is not atomic across vCPUs, which is why edgetvm counts single-threaded runs).
 *
 * qemu-user on Debian 12 (7.2) installs no qemu-plugin.h, so the handful of declarations used
 * here are written out for plugin API version 1; their ABI has not changed since qemu 4.2. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;

enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 = 0 };

typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
void qemu_plugin_outs(const char *string);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

static uint64_t guest_instructions;
/* A copy: qemu frees the plugin's argv once qemu_plugin_install returns. */
static char report_path[4096];

static void count_block(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &guest_instructions,
                                             qemu_plugin_tb_n_insns(tb));
}

static void report(qemu_plugin_id_t id, void *userdata)
{
    char line[48];
    (void)id;
    (void)userdata;
    snprintf(line, sizeof line, "guest_instructions %llu\n", (unsigned long long)guest_instructions);
    if (report_path[0] != '\0') {
        FILE *out = fopen(report_path, "w");
        if (out != NULL) {
            int ok = fputs(line, out) >= 0;
            if (fclose(out) == 0 && ok)
                return;
        }
    }
    /* No file (or it could not be written): the caller then finds no count and says so. */
    qemu_plugin_outs(line);
}

__attribute__((visibility("default")))
int qemu_plugin_install(qemu_plugin_id_t id, const void *info, int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0 && strlen(argv[i] + 4) < sizeof report_path)
            strcpy(report_path, argv[i] + 4);
        else
            return -1; /* an unknown argument or a path too long: qemu refuses to start rather than lose the count */
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, count_block);
    qemu_plugin_register_atexit_cb(id, report, NULL);
    return 0;
}

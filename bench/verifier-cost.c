/* What the kernel's verifier goes through for each program of the BPF object: the "processed N
 * insns" and "verification time" lines of the verifier's statistics (log level 4), per program,
 * and two totals over the programs the agent loads with tracepoints (kprobe programs left out):
 * with the plain programs (kernels without bpf_loop, or the perf buffer) and with the loop
 * variants (`_lp`) in their place and no entry programs for the syscalls whose exit has one
 * (src/kernel/attach-plan.ts). Loads the object once; needs root.
 *
 *   cc -O1 -o /tmp/verifier-cost bench/verifier-cost.c -I .output/libbpf-1.1.2/src \
 *      .output/libbpf-build/libbpf.a -lelf -lz
 *   sudo /tmp/verifier-cost .output/tracer.bpf.o
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "libbpf.h"

#define MAX_PROGS 256
#define LOG_SIZE 65536

static char logs[MAX_PROGS][LOG_SIZE];
static const char *names[MAX_PROGS];
static long insns[MAX_PROGS];

static int has_variant(int n, const char *name)
{
	char want[256];
	snprintf(want, sizeof(want), "%s_lp", name);
	for (int i = 0; i < n; i++)
		if (strcmp(names[i], want) == 0)
			return 1;
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s OBJECT\n", argv[0]);
		return 2;
	}
	struct bpf_object *obj = bpf_object__open(argv[1]);
	if (!obj) {
		perror("open");
		return 1;
	}
	struct bpf_program *p;
	int n = 0;
	bpf_object__for_each_program(p, obj) {
		if (n == MAX_PROGS)
			break;
		bpf_program__set_log_level(p, 4);
		bpf_program__set_log_buf(p, logs[n], LOG_SIZE);
		names[n++] = bpf_program__name(p);
	}
	if (bpf_object__load(obj)) {
		fprintf(stderr, "load failed\n");
		return 1;
	}
	long plain = 0, variants = 0;
	for (int i = 0; i < n; i++) {
		const char *s = strstr(logs[i], "processed ");
		const char *t = strstr(logs[i], "verification time ");
		insns[i] = s ? atol(s + 10) : -1;
		printf("%-28s %8ld insns %8ld us\n", names[i], insns[i], t ? atol(t + 18) : -1);
	}
	for (int i = 0; i < n; i++) {
		if (insns[i] < 0 || strncmp(names[i], "kp_", 3) == 0)
			continue;
		size_t len = strlen(names[i]);
		int is_variant = len > 3 && strcmp(names[i] + len - 3, "_lp") == 0;
		if (!is_variant)
			plain += insns[i];
		/* with the variants, a syscall whose exit has one loads no entry program */
		char exit_lp[256] = "";
		if (strncmp(names[i], "tp_enter_", 9) == 0)
			snprintf(exit_lp, sizeof(exit_lp), "tp_exit_%s", names[i] + 9);
		if ((is_variant || !has_variant(n, names[i])) && !(exit_lp[0] && has_variant(n, exit_lp)))
			variants += insns[i];
	}
	printf("loaded set, plain programs: %ld insns\nloaded set, loop variants: %ld insns\n", plain, variants);
	bpf_object__close(obj);
	return 0;
}

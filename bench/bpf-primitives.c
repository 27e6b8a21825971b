/* What the building blocks of the tracer's BPF programs cost here: one program per block on
 * sys_enter_write (bench/bpf-primitives.bpf.c), attached alone while this process makes COUNT
 * write(-7, buf, 16) calls (EBADF at once), then its bpf_stats run time per call. p_empty is
 * the floor: what bpf_stats itself adds to every program run (two clock reads). The ring buffer
 * is drained between blocks, so p_ringbuf_300 measures writes that succeed. Needs root.
 *
 *   clang -g -O2 -target bpf -D__TARGET_ARCH_x86 -I .output -c bench/bpf-primitives.bpf.c \
 *      -o /tmp/bpf-primitives.bpf.o
 *   cc -O1 -o /tmp/bpf-primitives bench/bpf-primitives.c -I .output/libbpf-1.1.2/src \
 *      .output/libbpf-build/libbpf.a -lelf -lz
 *   sudo /tmp/bpf-primitives /tmp/bpf-primitives.bpf.o [COUNT]
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>
#include "libbpf.h"
#include "bpf.h"

static int drain(void *ctx, void *data, size_t size)
{
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s OBJECT [COUNT]\n", argv[0]);
		return 2;
	}
	long count = argc > 2 ? atol(argv[2]) : 1000000;
	static char buf[4096];
	struct bpf_object *obj = bpf_object__open(argv[1]);
	if (!obj || bpf_object__load(obj)) {
		fprintf(stderr, "cannot load %s\n", argv[1]);
		return 1;
	}
	if (bpf_enable_stats(BPF_STATS_RUN_TIME) < 0) {
		perror("bpf_enable_stats");
		return 1;
	}
	struct ring_buffer *rb = ring_buffer__new(bpf_object__find_map_fd_by_name(obj, "ring"), drain, NULL, NULL);
	struct bpf_program *p;
	bpf_object__for_each_program(p, obj) {
		struct bpf_link *l = bpf_program__attach(p);
		if (!l) {
			fprintf(stderr, "cannot attach %s\n", bpf_program__name(p));
			return 1;
		}
		for (long i = 0; i < count; i++) {
			syscall(SYS_write, -7, buf, 16);
			if (rb && (i & 4095) == 0)
				ring_buffer__consume(rb);
		}
		struct bpf_prog_info info = {};
		__u32 len = sizeof(info);
		bpf_obj_get_info_by_fd(bpf_program__fd(p), &info, &len);
		printf("%-18s %7.1f ns/run (%llu runs)\n", bpf_program__name(p),
		       info.run_cnt ? (double)info.run_time_ns / info.run_cnt : 0.0, (unsigned long long)info.run_cnt);
		bpf_link__destroy(l);
	}
	return 0;
}

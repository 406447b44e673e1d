package kevents

// The BPF objects are generated and committed, so that building needs no
// clang; `make bpf` regenerates them (it writes build/bpf/vmlinux.h from
// the running kernel's BTF first). CO-RE relocations make the objects
// independent of the kernel that generated vmlinux.h.
//go:generate go tool bpf2go -tags linux -target amd64,arm64 -cc clang -cflags "-O2 -g -Wall -Werror -I../../build/bpf" kevents bpf/kevents.bpf.c

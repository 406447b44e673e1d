//go:build linux

package enricher

import (
	"os"
	"os/user"
	"strconv"
	"testing"
	"time"
)

// FromKernel names a process from what the kernel event carried, in the
// order: exec cache, /proc (same start time only), a forked child's
// parent, the kernel's facts alone.
func TestFromKernel(t *testing.T) {
	f := newFakeProc(t)
	f.process(200, "shell", 100, "/bin/sh", "sh\x00-c\x00loop\x00")    // a parent that forks
	f.process(300, "reused", 900, "/usr/bin/other", "other\x00")       // pid 300 now another process
	f.process(400, "alive", 400, "/usr/bin/alive", "alive\x00--x\x00") // still running
	uid := uint32(os.Getuid())
	name := strconv.Itoa(os.Getuid())
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	created := time.Unix(1700000000, 0)

	e := New(f.root, 16)
	e.NoteExec(Task{Pid: 300, Ppid: 1, UID: uid, Comm: "curl", StartTicks: 500, CreateTime: created},
		"/usr/bin/curl", []byte("curl\x00-s\x00http://example.invalid/\x00"))

	for _, tc := range []struct {
		name string
		task Task
		want Process
	}{{
		"exited after exec: the exec cache, not the process that reused its pid",
		Task{Pid: 300, Ppid: 1, UID: uid, Comm: "curl", StartTicks: 500, CreateTime: created},
		Process{Pid: 300, Ppid: 1, Name: "curl", Exe: "/usr/bin/curl", CommandLine: "curl -s http://example.invalid/",
			Username: name, UID: int32(uid), CreateTime: created, StartTicks: 500},
	}, {
		"alive: /proc",
		Task{Pid: 400, Ppid: 1, UID: uid, Comm: "alive", StartTicks: 400, CreateTime: created},
		Process{Pid: 400, Ppid: 1, Name: "alive", Exe: "/usr/bin/alive", CommandLine: "alive --x",
			Username: name, UID: int32(uid), CreateTime: time.Unix(1700000000+4, 0), StartTicks: 400},
	}, {
		"forked child without exec, gone: its parent's executable",
		Task{Pid: 201, Ppid: 200, UID: uid, Comm: "shell", StartTicks: 150, CreateTime: created},
		Process{Pid: 201, Ppid: 200, Name: "shell", Exe: "/bin/sh", CommandLine: "sh -c loop",
			Username: name, UID: int32(uid), CreateTime: created, StartTicks: 150},
	}, {
		"gone, parent runs something else: the kernel's facts alone",
		Task{Pid: 202, Ppid: 200, UID: uid, Comm: "worker", StartTicks: 160, CreateTime: created},
		Process{Pid: 202, Ppid: 200, Name: "worker", Username: name, UID: int32(uid), CreateTime: created, StartTicks: 160},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := e.FromKernel(tc.task)
			if got == nil || *got != tc.want {
				t.Errorf("FromKernel = %+v\nwant          %+v", got, tc.want)
			}
			if again := e.FromKernel(tc.task); again != got {
				t.Errorf("second call not answered from the cache")
			}
		})
	}
}

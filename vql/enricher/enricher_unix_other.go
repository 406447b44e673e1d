//go:build !linux && !windows

package enricher

import "github.com/shirou/gopsutil/v4/process"

// parentAndName asks gopsutil (on macOS: sysctl kern.proc.pid, and the
// arguments for names the kernel truncated to 16 bytes).
func parentAndName(h *process.Process) (ppid int32, name string) {
	ppid, _ = h.Ppid()
	name, _ = h.Name()
	return ppid, name
}

//go:build windows

package enricher

import (
	"unsafe"

	"github.com/shirou/gopsutil/v4/process"
	"golang.org/x/sys/windows"
)

// parentAndName reads a process's parent and image name from one process
// snapshot, which needs no handle to the process: it answers for processes
// OpenProcess refuses. gopsutil's Name opens the process, and its Ppid takes
// a snapshot of its own.
func parentAndName(h *process.Process) (ppid int32, name string) {
	if ppid, name, ok := snapshotEntry(uint32(h.Pid)); ok {
		return ppid, name
	}
	// Gone since: whatever gopsutil can still say.
	ppid, _ = h.Ppid()
	name, _ = h.Name()
	return ppid, name
}

func snapshotEntry(pid uint32) (ppid int32, name string, ok bool) {
	snap, err := windows.CreateToolhelp32Snapshot(windows.TH32CS_SNAPPROCESS, 0)
	if err != nil {
		return 0, "", false
	}
	defer windows.CloseHandle(snap)
	var pe windows.ProcessEntry32
	pe.Size = uint32(unsafe.Sizeof(pe))
	for err = windows.Process32First(snap, &pe); err == nil; err = windows.Process32Next(snap, &pe) {
		if pe.ProcessID == pid {
			return int32(pe.ParentProcessID), windows.UTF16ToString(pe.ExeFile[:]), true
		}
	}
	return 0, "", false
}

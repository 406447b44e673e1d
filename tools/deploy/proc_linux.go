package deploy

import "syscall"

// velociraptor gets its own process group (so a terminal's Ctrl-C reaches
// only our supervisor, which then stops it in order) and SIGTERM if the
// supervisor dies without stopping it.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

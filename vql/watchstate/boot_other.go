//go:build !linux

package watchstate

import (
	"strconv"

	"github.com/shirou/gopsutil/v4/host"
)

// BootID names the running boot by its boot time, in seconds (the OS
// computes it from the uptime, so it may move by a second: SameBoot allows
// for that).
func BootID() string {
	t, err := host.BootTime()
	if err != nil || t == 0 {
		return ""
	}
	return "boottime:" + strconv.FormatUint(t, 10)
}

package watchstate

import (
	"os"
	"strings"
)

// BootID names the running boot: cookies, inodes and PIDs are unique only
// within one, so a state saved in another boot matches no socket. Linux
// gives each boot a random UUID.
func BootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return "linux:" + strings.TrimSpace(string(b))
}

package watchstate

import (
	"strconv"
	"strings"
)

// SameBoot tells whether two BootIDs name the same boot. An empty one (the
// OS would not say) is never the same.
func SameBoot(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	if a == b {
		return true
	}
	ta, okA := strings.CutPrefix(a, "boottime:")
	tb, okB := strings.CutPrefix(b, "boottime:")
	if !okA || !okB {
		return false
	}
	x, errA := strconv.ParseInt(ta, 10, 64)
	y, errB := strconv.ParseInt(tb, 10, 64)
	return errA == nil && errB == nil && x-y <= 2 && y-x <= 2
}

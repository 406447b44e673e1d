// Package owner finds the process that holds each socket.
//
// On Linux the socket table names a socket by inode only, and the kernel
// offers no inode-to-process index: the owner is found by reading the links
// under /proc/<pid>/fd of every process until one reads "socket:[inode]".
// That walk is what makes netstat() expensive, so a Resolver remembers each
// owner for as long as the socket lives, walks /proc only for inodes it has
// not seen, at most once per call, and stops as soon as it has found them.
//
// Elsewhere the OS reports the owner with the socket table itself and the
// collector has already filled Pid; the Resolver leaves it alone.
package owner

// Stats describes the work a Resolver has done.
type Stats struct {
	Scans     uint64 // walks of /proc, at most one per Resolve
	Processes uint64 // fd directories read
	Readlinks uint64 // fd links read
	Trusted   uint64 // fd links not read: still the live socket of the last visit
	FullScans uint64 // scans that read every link (an inode stayed hidden)

	Cached     int // live inodes known to the Resolver, owner found or not
	Unresolved int // live inodes given up on: their sockets show Pid -1

	// Denied is the number of processes the last scan could not inspect
	// (not running as root). Their sockets show Pid -1; callers are expected
	// to say so once rather than on every poll.
	Denied int
}

const (
	linkPrefix = "socket:["
	linkSuffix = "]"
)

// parseSocketLink reads the inode out of the target of a /proc/<pid>/fd
// link to a socket, "socket:[12345]". Inode 0 is rejected: no live socket
// has it, and Socket uses it to mean "no inode".
func parseSocketLink(b []byte) (inode uint64, ok bool) {
	if len(b) <= len(linkPrefix)+len(linkSuffix) ||
		string(b[:len(linkPrefix)]) != linkPrefix ||
		string(b[len(b)-len(linkSuffix):]) != linkSuffix {
		return 0, false
	}
	for _, c := range b[len(linkPrefix) : len(b)-len(linkSuffix)] {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if inode > (1<<64-1-d)/10 {
			return 0, false
		}
		inode = inode*10 + d
	}
	return inode, inode != 0
}

//go:build race

package netstat_watch

// raceEnabled: the race detector slows the tests' own load generators
// several times over (make race).
const raceEnabled = true

//go:build !race

package netstat_watch

const raceEnabled = false

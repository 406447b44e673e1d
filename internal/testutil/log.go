package testutil

import (
	"log"
	"regexp"
	"strings"
	"sync"

	"www.velocidex.com/golang/velociraptor/constants"
	"www.velocidex.com/golang/velociraptor/logging"
)

// QueryLog keeps what a VQL query logs: give Logger() to scope.SetLogger.
type QueryLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *QueryLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, string(b))
	return len(b), nil
}

// Logger writes into l, one line a message.
func (l *QueryLog) Logger() *log.Logger { return log.New(l, "", 0) }

// String is everything logged so far.
func (l *QueryLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "")
}

// errorRegex is the pattern Velociraptor v0.75.2 looks for in log messages
// (responder, server artifacts, flow logs) besides the ERROR level.
var errorRegex = regexp.MustCompile(constants.VQL_ERROR_REGEX)

// FailingLines are the lines of a query log that make Velociraptor mark the
// query failed: logged at ERROR level ("ERROR:" prefix, e.g. scope.Error),
// or matching its VQL_ERROR_REGEX, decided as its client responder and its
// server artifact logger do.
func FailingLines(log string) []string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		level, msg := logging.SplitIntoLevelAndLog([]byte(line))
		if level == logging.ERROR || errorRegex.MatchString(msg) {
			out = append(out, line)
		}
	}
	return out
}

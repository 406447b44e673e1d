package testutil

import (
	"log"
	"strings"
	"sync"
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

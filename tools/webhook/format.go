package webhook

import (
	"fmt"
	"strings"
)

// Format renders an alert for a terminal: a header line, then one line per
// fact. color adds ANSI colors.
func Format(a Alert, color bool) string {
	bold, red, dim, reset := "", "", "", ""
	if color {
		bold, red, dim, reset = "\033[1m", "\033[31m", "\033[2m", "\033[0m"
	}
	var b strings.Builder
	when := a.Timestamp
	if when == "" {
		when = a.Received.UTC().Format("2006-01-02T15:04:05Z")
	}

	if a.Artifact == "" {
		// slack / discord / teams payloads: just their text.
		fmt.Fprintf(&b, "%s%s━━ netwatch webhook %s ━━%s\n", bold, red, when, reset)
		for _, line := range strings.Split(strings.TrimSpace(a.Text), "\n") {
			fmt.Fprintf(&b, "  %s\n", line)
		}
		return b.String()
	}

	if a.Type == "summary" {
		fmt.Fprintf(&b, "%s%s━━ netwatch: alerts suppressed on %s ━━%s\n", bold, red, host(a), reset)
		fmt.Fprintf(&b, "  %s\n", a.Message)
		return b.String()
	}

	verb := "opened"
	if a.Diff == "removed" {
		verb = "closed"
	}
	fmt.Fprintf(&b, "%s%s━━ ALERT %s  %s %s %s connection to %s ━━%s\n", bold, red, when,
		host(a), verb, orDash(a.Direction), a.Raddr, reset)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "  %s%-9s%s %s\n", dim, k, reset, v)
		}
	}
	proc := a.Process.Name
	if proc == "" {
		proc = a.Process.Label
	}
	if a.Process.Pid > 0 {
		proc += fmt.Sprintf("  pid %d", a.Process.Pid)
		if a.Process.Ppid > 0 {
			proc += fmt.Sprintf("  ppid %d", a.Process.Ppid)
		}
	}
	if a.Process.Username != "" {
		proc += "  user " + a.Process.Username
	}
	row("process", proc)
	row("path", a.Process.Path)
	row("command", oneLine(a.Process.CommandLine, 200))
	conn := fmt.Sprintf("%s -> %s", a.Laddr, a.Raddr)
	if a.Protocol != "" {
		conn = a.Protocol + " " + conn
	}
	if a.Status != "" {
		conn += "  (" + a.Status + ")"
	}
	row("conn", conn)
	if a.IOC != nil && a.IOC.Network != "" {
		row("IOC", strings.TrimSpace(a.IOC.Network+"  "+a.IOC.Description))
	}
	if len(a.Labels) > 0 {
		row("labels", strings.Join(a.Labels, ", "))
	}
	return b.String()
}

func host(a Alert) string {
	switch {
	case a.Fqdn != "" && a.ClientId != "":
		return fmt.Sprintf("%s (%s)", a.Fqdn, a.ClientId)
	case a.Fqdn != "":
		return a.Fqdn
	default:
		return a.ClientId
	}
}

func orDash(s string) string {
	if s == "" {
		return "a"
	}
	return s
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}

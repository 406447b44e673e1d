// Command webhook is a local webhook receiver for
// Server.Alerts.TrackNetworkConnections: it prints each alert readably.
// `make run` starts one by itself; use this one for a server of your own:
//
//	go run ./tools/webhook/cmd/webhook -listen 127.0.0.1:9999
//
// then set the artifact's WebHook to http://127.0.0.1:9999/webhook (any
// format; json shows the most).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/netwatch-dfir/netwatch/tools/webhook"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9999", "loopback address to listen on")
	raw := flag.Bool("raw", false, "also print each body as received")
	flag.Parse()

	r, err := webhook.Listen(*listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "webhook:", err)
		os.Exit(1)
	}
	color := isTerminal()
	r.OnAlert = func(a webhook.Alert) {
		fmt.Print(webhook.Format(a, color))
		if *raw {
			fmt.Printf("  %s\n", a.Raw)
		}
	}
	fmt.Printf("webhook receiver listening: %s  (Ctrl-C stops)\n", r.URL())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	_ = r.Close()
}

func isTerminal() bool {
	fi, err := os.Stdout.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Command run is `make run`: the custom Velociraptor as a self-contained
// deployment on loopback (server + GUI + one client, `velociraptor gui`
// mode, datastore in -dir), netwatch's monitoring installed, a webhook
// receiver printing each alert here, and a demo listener that a one-line
// command connects to, to make an alert fire.
//
// It builds nothing (make does). Ctrl-C (SIGINT or SIGTERM) stops
// everything it started and leaves the datastore for the next run; -fresh
// starts from an empty one.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/netwatch-dfir/netwatch/tools/deploy"
	"github.com/netwatch-dfir/netwatch/tools/webhook"
)

// Info is what -info writes once everything is up (for scripts such as
// the browser test).
type Info struct {
	GUIURL          string       `json:"gui_url"`
	EventsURL       string       `json:"events_url"`
	User            string       `json:"user"`
	Password        string       `json:"password"`
	ClientID        string       `json:"client_id"`
	Fqdn            string       `json:"fqdn"`
	APIConfig       string       `json:"api_config"`
	Dir             string       `json:"dir"`
	Ports           deploy.Ports `json:"ports"`
	WebhookURL      string       `json:"webhook_url"`
	DemoPort        int          `json:"demo_port"`
	DemoCommand     string       `json:"demo_command"`
	VelociraptorPid int          `json:"velociraptor_pid"`
	Log             string       `json:"log"`
}

func main() {
	binary := flag.String("binary", "build/velociraptor", "the custom velociraptor binary (make builds it)")
	dir := flag.String("dir", "build/run", "datastore folder (kept between runs)")
	fresh := flag.Bool("fresh", false, "wipe the datastore first")
	freePorts := flag.Bool("free-ports", false, "use any free ports instead of trying the defaults first")
	demoPort := flag.Int("demo-port", 4444, "port of the demo listener the alert filter watches (another free port if taken)")
	webhookPort := flag.Int("webhook-port", 9999, "port of the webhook receiver (another free port if taken)")
	period := flag.String("period", "", "Period parameter of the client artifact (seconds; empty: the artifact's default)")
	infoPath := flag.String("info", "", "write a JSON description of the deployment here once it is up")
	quiet := flag.Bool("quiet", false, "do not print the banner (alerts are still printed)")
	onlyRemote := flag.String("only-remote", "", "record only connections to this loopback `IP` (the client artifact's ExcludeRemoteNetworks gets every other loopback network): for tests on a busy host")
	clientParams := map[string]string{}
	flag.Func("client-param", "a parameter of the client artifact, `NAME=VALUE` (repeatable), e.g. OnlyOutbound=Y",
		func(s string) error {
			k, v, ok := strings.Cut(s, "=")
			if !ok || k == "" {
				return fmt.Errorf("want NAME=VALUE, got %q", s)
			}
			clientParams[k] = v
			return nil
		})
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if err := run(ctx, options{
		binary: *binary, dir: *dir, fresh: *fresh, freePorts: *freePorts,
		demoPort: *demoPort, webhookPort: *webhookPort, period: *period,
		infoPath: *infoPath, quiet: *quiet, clientParams: clientParams, onlyRemote: *onlyRemote,
	}); err != nil {
		if ctx.Err() != nil { // Ctrl-C during start-up: everything is stopped
			fmt.Fprintln(os.Stderr, "netwatch: interrupted during start-up; stopped.")
			os.Exit(130)
		}
		fmt.Fprintln(os.Stderr, "netwatch run:", err)
		os.Exit(1)
	}
}

type options struct {
	binary, dir, period, infoPath string
	fresh, freePorts, quiet       bool
	demoPort, webhookPort         int
	clientParams                  map[string]string
	onlyRemote                    string
}

func run(ctx context.Context, o options) error {
	color := isTerminal(os.Stdout)
	var out sync.Mutex
	say := func(format string, args ...any) {
		out.Lock()
		defer out.Unlock()
		fmt.Printf(format, args...)
	}

	preferred := deploy.DefaultPorts
	if o.freePorts {
		preferred = deploy.Ports{}
		o.demoPort, o.webhookPort = 0, 0
	}

	// The webhook receiver and the demo listener come first, so that the
	// ports picked for velociraptor do not collide with theirs.
	hookPort, err := deploy.PickPort(o.webhookPort)
	if err != nil {
		return err
	}
	hook, err := webhook.Listen(fmt.Sprintf("127.0.0.1:%d", hookPort))
	if err != nil {
		return fmt.Errorf("webhook receiver: %w", err)
	}
	defer hook.Close()
	hook.OnAlert = func(a webhook.Alert) { say("%s", webhook.Format(a, color)) }

	demo, err := listenDemo(o.demoPort)
	if err != nil {
		return fmt.Errorf("demo listener: %w", err)
	}
	defer demo.Close()
	demoPort := demo.Addr().(*net.TCPAddr).Port
	go serveDemo(demo)

	if !o.quiet {
		say("netwatch: starting Velociraptor (%s gui) in %s …\n", o.binary, o.dir)
	}
	startCtx, cancelStart := context.WithTimeout(ctx, 3*time.Minute)
	defer cancelStart()
	d, err := deploy.Start(startCtx, deploy.Options{
		Binary: o.binary, Dir: o.dir, Fresh: o.fresh, Ports: preferred,
	})
	if err != nil {
		return err
	}
	defer d.Stop()

	client, err := d.WaitClient(startCtx)
	if err != nil {
		return err
	}
	for _, name := range []string{deploy.ClientArtifact, deploy.ServerArtifact} {
		ok, err := d.ArtifactExists(startCtx, name)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("artifact %s is not built into %s: run make to rebuild it", name, o.binary)
		}
	}

	// Demo traffic is loopback, which the client artifact drops by default.
	clientParams := map[string]string{"ExcludeLoopback": "N"}
	if o.period != "" {
		clientParams["Period"] = o.period
	}
	if o.onlyRemote != "" {
		nets, err := allLoopbackBut(o.onlyRemote)
		if err != nil {
			return err
		}
		clientParams["ExcludeRemoteNetworks"] = "Network,Description\n" + strings.Join(nets, ",\n") + ",\n"
	}
	for k, v := range o.clientParams {
		clientParams[k] = v
	}
	if err := d.SetClientMonitoring(startCtx, deploy.ClientArtifact, clientParams); err != nil {
		return err
	}
	serverParams := DemoAlertParams(hook.URL(), demoPort)
	if err := d.SetServerMonitoring(startCtx, deploy.ServerArtifact, serverParams); err != nil {
		return err
	}

	demoCmd := fmt.Sprintf("bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d; read -t 1 -u 3'", demoPort)
	info := Info{
		GUIURL:          d.GUIURL,
		EventsURL:       fmt.Sprintf("%sapp/index.html#/events/%s/%s", d.GUIURL, client.ID, deploy.ClientArtifact),
		User:            deploy.GUIUser,
		Password:        deploy.GUIPassword,
		ClientID:        client.ID,
		Fqdn:            client.Fqdn,
		APIConfig:       d.APIConfig,
		Dir:             d.Dir,
		Ports:           d.Ports,
		WebhookURL:      hook.URL(),
		DemoPort:        demoPort,
		DemoCommand:     demoCmd,
		VelociraptorPid: d.Pid(),
		Log:             d.LogPath,
	}
	if o.infoPath != "" {
		b, _ := json.MarshalIndent(info, "", "  ")
		if err := os.WriteFile(o.infoPath+".tmp", b, 0o600); err != nil {
			return err
		}
		if err := os.Rename(o.infoPath+".tmp", o.infoPath); err != nil {
			return err
		}
	}
	if !o.quiet {
		say("%s", banner(info, color))
	}

	select {
	case <-ctx.Done():
		say("\nnetwatch: stopping (the datastore stays in %s) …\n", d.Dir)
	case <-d.Done():
		return fmt.Errorf("velociraptor exited unexpectedly; last lines of %s:\n%s", d.LogPath, d.LogTail(20))
	}
	d.Stop()
	say("netwatch: stopped.\n")
	return nil
}

// DemoAlertParams configures Server.Alerts.TrackNetworkConnections for the
// demo: JSON webhooks to the local receiver for any connection to the demo
// port on 127.0.0.1, which the IOC list names, alerting on every one
// (no dedup window, so a second try alerts again).
func DemoAlertParams(webhookURL string, demoPort int) map[string]string {
	return map[string]string{
		"WebHook":         webhookURL,
		"WebHookFormat":   "json",
		"RemotePortRegex": fmt.Sprintf("^%d$", demoPort),
		"IOCs": "Network,Description\n" +
			"127.0.0.1/32,netwatch demo: loopback stands in for an attacker's C2 server\n",
		"DedupSeconds": "0",
	}
}

func banner(i Info, color bool) string {
	b, reset := "", ""
	if color {
		b, reset = "\033[1m", "\033[0m"
	}
	return fmt.Sprintf(`
%snetwatch is running%s  (Ctrl-C stops it; the datastore stays in %s)

  GUI          %s   login %s / %s
               (self-signed certificate: accept the browser's warning)
  Live events  %s
               (by hand: the magnifier of "Search clients", click %s (%s),
               "Client Events" in the left bar, then %s
               in "Select artifact")
  Alerts       printed here, and in the GUI: "Server Events" (left bar), then
               %s

  Demo alert   a connection to 127.0.0.1:%d, which the alert's IOC list and
               port filter match:

      %s%s%s

  API          %s --api_config %s query "SELECT * FROM clients()"
  Log          %s
`, b, reset, relPath(i.Dir),
		i.GUIURL, i.User, i.Password,
		i.EventsURL,
		i.ClientID, i.Fqdn, deploy.ClientArtifact,
		deploy.ServerArtifact,
		i.DemoPort,
		b, i.DemoCommand, reset,
		relBinary(), relPath(i.APIConfig),
		relPath(i.Log))
}

// listenDemo listens on 127.0.0.1:port, or on another free port if it is
// taken.
func listenDemo(port int) (net.Listener, error) {
	if port > 0 {
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			return l, nil
		}
	}
	return net.Listen("tcp", "127.0.0.1:0")
}

// serveDemo accepts connections and holds each until the peer closes it
// (at most 10 s), sending nothing: `read -t 1` then times out after 1 s,
// long enough for the client to name the process.
func serveDemo(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			_, _ = io.Copy(io.Discard, c)
		}()
	}
}

func relPath(p string) string {
	wd, err := os.Getwd()
	if err != nil {
		return p
	}
	if r, err := filepath.Rel(wd, p); err == nil && !filepath.IsAbs(r) && len(r) < len(p) {
		return r
	}
	return p
}

func relBinary() string {
	return relPath(flag.Lookup("binary").Value.String())
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// allLoopbackBut returns the networks that cover 127.0.0.0/8 and ::1
// except ip: the sibling of each prefix of ip from /9 to /32.
func allLoopbackBut(ip string) ([]string, error) {
	a := net.ParseIP(ip).To4()
	if a == nil || a[0] != 127 {
		return nil, fmt.Errorf("-only-remote %q: not an IPv4 loopback address", ip)
	}
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	var nets []string
	for bits := 9; bits <= 32; bits++ {
		flip := v ^ (1 << (32 - bits)) // the other half at this depth
		mask := ^uint32(0) << (32 - bits)
		n := flip & mask
		nets = append(nets, fmt.Sprintf("%d.%d.%d.%d/%d", n>>24, n>>16&0xff, n>>8&0xff, n&0xff, bits))
	}
	return append(nets, "::1/128"), nil
}

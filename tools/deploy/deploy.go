// Package deploy runs the custom Velociraptor binary as a self-contained
// deployment on loopback: `velociraptor gui` mode (frontend, GUI, API and
// one in-process client) with a datastore in one folder, on ports that are
// free. It is shared by `make run` (tools/run), the end-to-end test
// (tools/e2e) and the browser test (tools/browser, through tools/run).
//
// `gui` mode writes a config with fixed ports (8000, 8001, 8889, 8003) the
// first time it runs in a folder and reuses it afterwards. We write that
// config ourselves before the first start, with the same settings `gui`
// would use (see upstream bin/gui.go: generateGUIConfig) but our ports, and
// rewrite only the ports on later starts, so the keys, the client's
// identity and the data survive restarts.
package deploy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/netwatch-dfir/netwatch/internal/atomicfile"
)

// Login of the GUI user that `gui` mode creates (upstream hard-codes the
// same pair; it only ever listens on 127.0.0.1).
const (
	GUIUser     = "admin"
	GUIPassword = "password"

	// APIUser is the name of the API client certificate (role administrator).
	APIUser = "netwatch"

	// ClientArtifact and ServerArtifact are the netwatch artifacts built
	// into the binary.
	ClientArtifact = "Generic.Events.TrackNetworkConnections"
	ServerArtifact = "Server.Alerts.TrackNetworkConnections"
)

// Ports of one deployment. Zero means "any free port".
type Ports struct {
	Frontend   int `json:"frontend"`
	API        int `json:"api"`
	GUI        int `json:"gui"`
	Monitoring int `json:"monitoring"`
}

// DefaultPorts are the ports `velociraptor gui` uses.
var DefaultPorts = Ports{Frontend: 8000, API: 8001, GUI: 8889, Monitoring: 8003}

// Options for Start.
type Options struct {
	Binary string // the custom velociraptor binary
	Dir    string // datastore folder; created if missing

	// ClientBinary is what separate clients run (StartClient,
	// StartPool); default Binary. Set it with Binary a stock Velociraptor
	// and NoClient: the recommended deployment, a server without netwatch
	// code (it needs the artifact pack: ImportPack) and netwatch clients.
	ClientBinary string
	Fresh        bool // wipe Dir first

	// Ports to prefer; a port that is taken (or zero) is replaced by a
	// free one.
	Ports Ports

	// Where velociraptor's own output goes, in addition to
	// Dir/velociraptor.log. May be nil.
	Output io.Writer

	// ReadyTimeout bounds the wait for the API to answer (default 90 s).
	ReadyTimeout time.Duration

	// NoClient starts the server alone (`gui --noclient`): clients are
	// then separate processes (StartClient, StartPool).
	NoClient bool

	// ExactPorts uses Ports as they are (all four must be set) and fails
	// rather than picking others: a server restarted on an existing Dir
	// must keep its frontend port, which its clients' configs hold.
	ExactPorts bool
}

// Deployment is a running `velociraptor gui`.
type Deployment struct {
	Binary       string
	ClientBinary string // see Options.ClientBinary
	Dir          string
	Ports        Ports
	APIConfig    string // API client config (administrator)
	GUIURL       string // https://127.0.0.1:PORT/
	LogPath      string // velociraptor's output

	cmd      *exec.Cmd
	logFile  *os.File
	noClient bool
	done     chan struct{}
	waitErr  error
	stopOnce sync.Once
}

// Start brings the deployment up and returns once the API answers.
func Start(ctx context.Context, opts Options) (*Deployment, error) {
	if opts.Binary == "" || opts.Dir == "" {
		return nil, errors.New("deploy: Binary and Dir are required")
	}
	bin, err := filepath.Abs(opts.Binary)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("deploy: binary: %w (run make first)", err)
	}
	clientBin := bin
	if opts.ClientBinary != "" {
		if clientBin, err = filepath.Abs(opts.ClientBinary); err != nil {
			return nil, err
		}
		if _, err := os.Stat(clientBin); err != nil {
			return nil, fmt.Errorf("deploy: client binary: %w", err)
		}
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	if opts.Fresh {
		if err := os.RemoveAll(dir); err != nil {
			return nil, fmt.Errorf("deploy: wiping %s: %w", dir, err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "temp"), 0o700); err != nil {
		return nil, err
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 90 * time.Second
	}

	// A port that was free when we looked can be taken before velociraptor
	// binds it: then it exits at once, and we try again with other ports.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		preferred := opts.Ports
		if attempt > 0 {
			if opts.ExactPorts {
				break
			}
			preferred = Ports{}
		}
		var ports Ports
		if opts.ExactPorts {
			ports, err = exactPorts(ctx, preferred)
		} else {
			ports, err = PickPorts(preferred)
		}
		if err != nil {
			return nil, err
		}
		d := &Deployment{
			Binary:       bin,
			ClientBinary: clientBin,
			Dir:          dir,
			Ports:        ports,
			APIConfig:    filepath.Join(dir, "api.config.yaml"),
			GUIURL:       fmt.Sprintf("https://127.0.0.1:%d/", ports.GUI),
			LogPath:      filepath.Join(dir, "velociraptor.log"),
			noClient:     opts.NoClient,
			done:         make(chan struct{}),
		}
		if err := d.writeConfigs(ctx); err != nil {
			return nil, err
		}
		if err := d.start(opts.Output); err != nil {
			return nil, err
		}
		err = d.waitReady(ctx, opts.ReadyTimeout)
		if err == nil {
			return d, nil
		}
		exited := d.exited()
		d.Stop()
		lastErr = err
		if !exited || !strings.Contains(d.LogTail(50), "address already in use") {
			break
		}
	}
	return nil, lastErr
}

// writeConfigs writes server.config.yaml (first run) or rewrites its ports,
// then the client config and the API client config.
func (d *Deployment) writeConfigs(ctx context.Context) error {
	server := filepath.Join(d.Dir, "server.config.yaml")
	client := filepath.Join(d.Dir, "client.config.yaml")

	ports := map[string]any{
		"Frontend":   map[string]any{"bind_address": "127.0.0.1", "bind_port": d.Ports.Frontend},
		"API":        map[string]any{"bind_address": "127.0.0.1", "bind_port": d.Ports.API},
		"GUI":        map[string]any{"bind_address": "127.0.0.1", "bind_port": d.Ports.GUI, "public_url": fmt.Sprintf("https://localhost:%d/app/index.html", d.Ports.GUI)},
		"Monitoring": map[string]any{"bind_address": "127.0.0.1", "bind_port": d.Ports.Monitoring},
		"Client":     map[string]any{"server_urls": []string{fmt.Sprintf("wss://localhost:%d/", d.Ports.Frontend)}},
	}

	var out []byte
	if _, err := os.Stat(server); err == nil {
		merge, _ := json.Marshal(ports)
		out, err = d.run(ctx, "--config", server, "config", "show", "--merge", string(merge))
		if err != nil {
			return fmt.Errorf("deploy: updating ports in %s: %w", server, err)
		}
	} else {
		merge, err := json.Marshal(deepMerge(ports, d.firstRunSettings()))
		if err != nil {
			return err
		}
		out, err = d.run(ctx, "config", "generate", "--merge", string(merge))
		if err != nil {
			return fmt.Errorf("deploy: generating config: %w", err)
		}
	}
	if err := atomicfile.Write(server, 0o600, out); err != nil {
		return err
	}

	out, err := d.run(ctx, "--config", server, "config", "client")
	if err != nil {
		return fmt.Errorf("deploy: client config: %w", err)
	}
	if err := atomicfile.Write(client, 0o600, out); err != nil {
		return err
	}

	// The API client's user must exist before the server starts: a running
	// server caches its users and would refuse a certificate made later.
	if b, err := os.ReadFile(d.APIConfig); err == nil {
		re := regexp.MustCompile(`(?m)^api_connection_string: .*$`)
		b = re.ReplaceAll(b, []byte(fmt.Sprintf("api_connection_string: 127.0.0.1:%d", d.Ports.API)))
		return atomicfile.Write(d.APIConfig, 0o600, b)
	}
	if _, err := d.run(ctx, "--config", server, "config", "api_client",
		"--name", APIUser, "--role", "administrator", d.APIConfig); err != nil {
		return fmt.Errorf("deploy: API client config: %w", err)
	}
	return nil
}

// firstRunSettings are what `gui` mode sets on the config it generates
// (upstream bin/gui.go), apart from the ports, and the admin user.
func (d *Deployment) firstRunSettings() map[string]any {
	salt := make([]byte, 32)
	_, _ = rand.Read(salt)
	hash := sha256.Sum256(append(append([]byte{}, salt...), GUIPassword...))
	writeback := filepath.Join(d.Dir, "Velociraptor.writeback.yaml")
	temp := filepath.Join(d.Dir, "temp")
	return map[string]any{
		"Frontend": map[string]any{"do_not_compress_artifacts": true},
		"Client": map[string]any{
			"use_self_signed_ssl": true,
			"writeback_linux":     writeback,
			"writeback_darwin":    writeback,
			"writeback_windows":   writeback,
			"tempdir_linux":       temp,
			"tempdir_darwin":      temp,
			"tempdir_windows":     temp,
			// Directly connected: no disk buffer.
			"local_buffer": map[string]any{"disk_size": 0, "filename_linux": "",
				"filename_darwin": "", "filename_windows": ""},
		},
		"GUI": map[string]any{"initial_users": []map[string]any{{
			"name":          GUIUser,
			"password_hash": hex.EncodeToString(hash[:]),
			"password_salt": hex.EncodeToString(salt),
		}}},
		"Datastore": map[string]any{"location": d.Dir, "filestore_directory": d.Dir},
		// Events reach the server within a second or two.
		"defaults": map[string]any{"event_max_wait": 1, "event_max_wait_jitter": 1,
			"event_change_notify_all_clients": true},
	}
}

func (d *Deployment) start(extra io.Writer) error {
	f, err := os.OpenFile(d.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	d.logFile = f
	args := []string{"--nobanner", "gui", "--datastore", d.Dir, "--nobrowser"}
	if d.noClient {
		args = append(args, "--noclient")
	}
	fmt.Fprintf(f, "\n===== netwatch deploy: starting %s %s at %s (ports %+v)\n",
		d.Binary, strings.Join(args[1:], " "), time.Now().Format(time.RFC3339), d.Ports)

	var w io.Writer = f
	if extra != nil {
		w = io.MultiWriter(f, extra)
	}
	cmd := exec.Command(d.Binary, args...)
	cmd.Dir = d.Dir
	cmd.Stdout = w
	cmd.Stderr = w
	cmd.Env = append(os.Environ(), "VELOCIRAPTOR_CONFIG=", "VELOCIRAPTOR_LITERAL_CONFIG=")
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("deploy: starting %s: %w", d.Binary, err)
	}
	d.cmd = cmd
	go func() {
		d.waitErr = cmd.Wait()
		close(d.done)
	}()
	return nil
}

func (d *Deployment) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// Done is closed when the velociraptor process has exited.
func (d *Deployment) Done() <-chan struct{} { return d.done }

// Pid of the velociraptor process.
func (d *Deployment) Pid() int {
	if d.cmd == nil || d.cmd.Process == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

func (d *Deployment) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var lastErr error
	for {
		if d.exited() {
			return fmt.Errorf("deploy: velociraptor exited during start-up (%v); last lines of %s:\n%s",
				d.waitErr, d.LogPath, d.LogTail(20))
		}
		qctx, qcancel := context.WithTimeout(ctx, 15*time.Second)
		_, err := d.Query(qctx, "SELECT 1 AS Ready FROM scope()", nil)
		qcancel()
		if err == nil {
			return nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("deploy: API not answering after %v: %v; last lines of %s:\n%s",
				timeout, lastErr, d.LogPath, d.LogTail(20))
		case <-d.done:
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// Stop ends velociraptor (SIGTERM to its process group, SIGKILL after
// 20 s) and waits for it. The datastore is left as it is.
func (d *Deployment) Stop() error {
	d.stopOnce.Do(func() {
		if d.cmd == nil || d.cmd.Process == nil {
			return
		}
		endGroup(d.cmd, d.done, syscall.SIGTERM, 20*time.Second)
		if d.logFile != nil {
			d.logFile.Close()
		}
	})
	return nil
}

// LogTail returns the last n lines of velociraptor's output.
func (d *Deployment) LogTail(n int) string { return tail(d.LogPath, n) }

// run runs the binary for a one-off command and returns its stdout.
func (d *Deployment) run(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.Binary, append([]string{"--nobanner"}, args...)...)
	cmd.Dir = d.Dir
	cmd.Env = append(os.Environ(), "VELOCIRAPTOR_CONFIG=", "VELOCIRAPTOR_LITERAL_CONFIG=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", filepath.Base(d.Binary), args[len(args)-1], err,
			strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// QueryError is a VQL query that ran but reported an error.
type QueryError struct {
	Query string
	Log   []string
}

func (e *QueryError) Error() string {
	return fmt.Sprintf("query %q: %s", e.Query, strings.Join(e.Log, "; "))
}

// Row is one result row.
type Row map[string]any

// Query runs VQL on the server through the API (the CLI's `query
// --api_config`), with env as query variables (strings), and returns its
// rows. A VQL syntax error or a message from a function that failed (the
// CLI prints those only as log lines) is returned as a *QueryError.
func (d *Deployment) Query(ctx context.Context, vql string, env map[string]string) ([]Row, error) {
	out, logs, err := d.QueryRaw(ctx, vql, env, "jsonl")
	if err != nil {
		return nil, err
	}
	var rows []Row
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var r Row
		if err := json.Unmarshal(line, &r); err != nil {
			return nil, fmt.Errorf("query %q: bad output line %q: %w", vql, line, err)
		}
		rows = append(rows, r)
	}
	_ = logs
	return rows, sc.Err()
}

// queryFailure matches the log lines of a query that did not do what it
// was asked: VQL errors and the messages server functions log when they
// refuse (e.g. "add_client_monitoring: artifact X not found").
var queryFailure = regexp.MustCompile(`VQL Error|Symbol .* not found|: artifact .* not found|not a (client|server) event artifact|PermissionDenied|Permission denied`)

// QueryRaw runs VQL through the API and returns the output in format
// (jsonl, json or csv) and the query's log lines.
func (d *Deployment) QueryRaw(ctx context.Context, vql string, env map[string]string, format string) ([]byte, []string, error) {
	args := []string{"--nobanner", "-v", "--api_config", d.APIConfig, "query", "--format", format}
	for k, v := range env {
		args = append(args, "--env", k+"="+v)
	}
	args = append(args, vql)
	cmd := exec.CommandContext(ctx, d.Binary, args...)
	cmd.Dir = d.Dir
	cmd.Env = append(os.Environ(), "VELOCIRAPTOR_CONFIG=", "VELOCIRAPTOR_LITERAL_CONFIG=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	runErr := cmd.Run()
	var logs []string
	var failures []string
	for _, line := range strings.Split(stderr.String(), "\n") {
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		logs = append(logs, line)
		if queryFailure.MatchString(line) {
			if len(line) > 400 {
				line = line[:400] + "…"
			}
			failures = append(failures, line)
		}
	}
	if runErr != nil {
		tail := logs
		if len(tail) > 5 {
			tail = tail[len(tail)-5:]
		}
		return nil, logs, fmt.Errorf("query %q: %w: %s", vql, runErr, strings.Join(tail, " | "))
	}
	if len(failures) > 0 {
		return nil, logs, &QueryError{Query: vql, Log: failures}
	}
	return stdout.Bytes(), logs, nil
}

// deepMerge merges b into a (maps merged recursively, other values of b
// win) and returns a.
func deepMerge(a, b map[string]any) map[string]any {
	for k, bv := range b {
		if am, ok := a[k].(map[string]any); ok {
			if bm, ok := bv.(map[string]any); ok {
				a[k] = deepMerge(am, bm)
				continue
			}
		}
		a[k] = bv
	}
	return a
}

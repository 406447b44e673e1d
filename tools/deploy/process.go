package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/netwatch-dfir/netwatch/internal/atomicfile"
)

// Process is a velociraptor client process started next to a server
// deployment (see Options.NoClient): a real client (StartClient) or
// upstream's load-testing pool of virtual clients (StartPool). It lives
// independently of the Deployment that started it, so the server can be
// stopped and started again under it.
type Process struct {
	Name       string
	Dir        string // its own folder: config, identity, buffer, log
	ConfigPath string
	LogPath    string

	cmd      *exec.Cmd
	logFile  *os.File
	done     chan struct{}
	waitErr  error
	stopOnce sync.Once
}

// ClientOptions for StartClient.
type ClientOptions struct {
	// Name of the client's folder, Dir/clients/NAME. Starting a client of
	// the same name again reuses its writeback: the same client ID.
	Name string

	// Output receives the client's output in addition to its log file.
	// May be nil.
	Output io.Writer

	// BufferBytes is the size of the client's disk buffer of unsent
	// messages (default 64 MiB). See clientSettings.
	BufferBytes int
}

// StartClient starts a separate `velociraptor client -v` for the
// deployment (started with NoClient) and returns once the process is
// running; it enrols on its own (WaitClient).
func (d *Deployment) StartClient(ctx context.Context, opts ClientOptions) (*Process, error) {
	if opts.Name == "" {
		return nil, errors.New("deploy: client Name is required")
	}
	if opts.BufferBytes == 0 {
		opts.BufferBytes = 64 << 20
	}
	dir := filepath.Join(d.Dir, "clients", opts.Name)
	cfg, err := d.derivedClientConfig(ctx, dir, clientSettings(dir, opts.BufferBytes))
	if err != nil {
		return nil, err
	}
	return startProcess(d.ClientBinary, "client "+opts.Name, dir, cfg, opts.Output,
		"--config", cfg, "client", "-v")
}

// clientSettings are what a separate client changes in the deployment's
// client config (the one `gui` would run in-process):
//
//   - its own writeback (its keys and client ID) and temp folder in dir,
//     so it enrols as a client of its own;
//   - a disk buffer for the messages it could not send yet, as the stock
//     client config has (1 GiB in /var/tmp there): the `gui` config has
//     none (disk_size 0), which makes upstream use an in-memory ring
//     buffer of memory_size (50 MB) instead. Either survives a server
//     outage: the sender keeps retrying a leased batch and only commits it
//     once the server took it, and while the buffer is full the event
//     queries block rather than drop. Neither survives the client process:
//     upstream recreates the buffer file empty (and unlinked) at every
//     start (http_comms/ring_buffer_posix.go createFile). The disk buffer
//     is used so that the tests run the path deployed clients run;
//   - max_poll 2 s (+ up to 2 s of jitter) instead of 60 + 30 s: how long
//     a client waits before trying an unreachable server again, so a
//     restarted server is reached within seconds instead of a minute or
//     more.
func clientSettings(dir string, bufferBytes int) map[string]any {
	writeback := filepath.Join(dir, "writeback.yaml")
	temp := filepath.Join(dir, "temp")
	buffer := filepath.Join(dir, "buffer.bin")
	return map[string]any{"Client": map[string]any{
		"writeback_linux": writeback, "writeback_darwin": writeback, "writeback_windows": writeback,
		"tempdir_linux": temp, "tempdir_darwin": temp, "tempdir_windows": temp,
		"local_buffer": map[string]any{
			"disk_size":      bufferBytes,
			"filename_linux": buffer, "filename_darwin": buffer, "filename_windows": buffer,
		},
		"max_poll":     2,
		"max_poll_std": 2,
	}}
}

// PoolOptions for StartPool.
type PoolOptions struct {
	Name   string // folder Dir/pools/NAME
	Number int    // virtual clients
	Output io.Writer
	// StartRate is how many virtual clients start per second (upstream's
	// default is 20).
	StartRate int
}

// StartPool starts upstream's load-testing client, `velociraptor
// pool_client` (bin/pool.go): Number virtual clients in one process, each
// with its own writeback (so its own client ID) and connection to the
// server. They share one executor: a query (and the client event table)
// runs once and its results are sent by every virtual client. The event
// table is taken only from the first virtual client that receives it and
// never updated afterwards, so set the client monitoring before starting
// a pool.
func (d *Deployment) StartPool(ctx context.Context, opts PoolOptions) (*Process, error) {
	if opts.Name == "" || opts.Number <= 0 {
		return nil, errors.New("deploy: pool Name and Number are required")
	}
	dir := filepath.Join(d.Dir, "pools", opts.Name)
	wb := filepath.Join(dir, "writebacks")
	if err := os.MkdirAll(wb, 0o700); err != nil {
		return nil, err
	}
	// The pool replaces each virtual client's buffer with a 100 kB memory
	// ring itself; the settings here are those of its root executor.
	cfg, err := d.derivedClientConfig(ctx, dir, clientSettings(dir, 0))
	if err != nil {
		return nil, err
	}
	args := []string{"--config", cfg, "pool_client", "--number", strconv.Itoa(opts.Number),
		"--writeback_dir", wb}
	if opts.StartRate > 0 {
		args = append(args, "--start_rate", strconv.Itoa(opts.StartRate))
	}
	return startProcess(d.ClientBinary, "pool "+opts.Name, dir, cfg, opts.Output, args...)
}

// derivedClientConfig writes dir/client.config.yaml: the deployment's
// client config (current ports) with settings merged in.
func (d *Deployment) derivedClientConfig(ctx context.Context, dir string, settings map[string]any) (string, error) {
	if err := os.MkdirAll(filepath.Join(dir, "temp"), 0o700); err != nil {
		return "", err
	}
	merge, err := json.Marshal(settings)
	if err != nil {
		return "", err
	}
	out, err := d.run(ctx, "--config", filepath.Join(d.Dir, "client.config.yaml"),
		"config", "show", "--merge", string(merge))
	if err != nil {
		return "", fmt.Errorf("deploy: client config for %s: %w", dir, err)
	}
	path := filepath.Join(dir, "client.config.yaml")
	return path, atomicfile.Write(path, 0o600, out)
}

func startProcess(binary, name, dir, cfg string, extra io.Writer, args ...string) (*Process, error) {
	p := &Process{Name: name, Dir: dir, ConfigPath: cfg, LogPath: filepath.Join(dir, "velociraptor.log"),
		done: make(chan struct{})}
	f, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	p.logFile = f
	fmt.Fprintf(f, "\n===== netwatch deploy: starting %s %s at %s\n",
		binary, strings.Join(args, " "), time.Now().Format(time.RFC3339))
	var w io.Writer = f
	if extra != nil {
		w = io.MultiWriter(f, extra)
	}
	cmd := exec.Command(binary, append([]string{"--nobanner"}, args...)...)
	cmd.Dir = dir
	cmd.Stdout = w
	cmd.Stderr = w
	cmd.Env = append(os.Environ(), "VELOCIRAPTOR_CONFIG=", "VELOCIRAPTOR_LITERAL_CONFIG=")
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("deploy: starting %s: %w", name, err)
	}
	p.cmd = cmd
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid of the process.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Stop ends the process (SIGTERM to its process group, SIGKILL after
// 10 s) and waits for it.
func (p *Process) Stop() error { return p.end(syscall.SIGTERM, 10*time.Second) }

// Kill ends the process at once (SIGKILL to its process group), as a
// crash or a power cut would, and waits for it.
func (p *Process) Kill() error { return p.end(syscall.SIGKILL, 0) }

func (p *Process) end(sig syscall.Signal, grace time.Duration) error {
	p.stopOnce.Do(func() {
		endGroup(p.cmd, p.done, sig, grace)
		p.logFile.Close()
	})
	return nil
}

// endGroup sends sig to the process group of cmd, waits up to grace for
// the process to exit (done closed), then kills what is left of the group:
// anything it started goes too.
func endGroup(cmd *exec.Cmd, done <-chan struct{}, sig syscall.Signal, grace time.Duration) {
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, sig)
	select {
	case <-done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// LogTail returns the last n lines of the process's output.
func (p *Process) LogTail(n int) string { return tail(p.LogPath, n) }

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ClientID reads the client ID a client process enrolled with from its
// writeback ("" until it has one).
func (p *Process) ClientID() string {
	b, err := os.ReadFile(filepath.Join(p.Dir, "writeback.yaml"))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "client_id: "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Clients lists every client the server knows, with its FQDN once
// interrogated.
func (d *Deployment) Clients(ctx context.Context) ([]Client, error) {
	rows, err := d.Query(ctx, `
SELECT client_id, os_info.fqdn AS fqdn, os_info.hostname AS hostname FROM clients()`, nil)
	if err != nil {
		return nil, err
	}
	out := make([]Client, 0, len(rows))
	for _, r := range rows {
		c := Client{ID: str(r["client_id"]), Fqdn: str(r["fqdn"])}
		if c.Fqdn == "" {
			c.Fqdn = str(r["hostname"])
		}
		out = append(out, c)
	}
	return out, nil
}

package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"time"

	"github.com/Velocidex/ordereddict"
	"www.velocidex.com/golang/velociraptor/acls"
	"www.velocidex.com/golang/velociraptor/artifacts"
	"www.velocidex.com/golang/velociraptor/constants"
	"www.velocidex.com/golang/velociraptor/services"
	vql_subsystem "www.velocidex.com/golang/velociraptor/vql"
	"www.velocidex.com/golang/velociraptor/vql/networking"
	"www.velocidex.com/golang/vfilter"
	"www.velocidex.com/golang/vfilter/arg_parser"
)

const functionName = "netwatch_webhook"

// WebhookArgs documents the function in the GUI's VQL help: keep the doc
// tags complete, docs/vql/netwatch_webhook.yaml is checked against them.
type WebhookArgs struct {
	URL         string            `vfilter:"optional,field=url,doc=The receiver's URL. It is never logged nor returned; prefer secret, which also keeps it out of the artifact's parameters."`
	Secret      string            `vfilter:"optional,field=secret,doc=Name of a managed secret of type HTTP Secrets holding the URL (its extra_headers, root_ca and skip_verify apply too). Server only; the query's principal must be allowed the secret."`
	Data        string            `vfilter:"required,field=data,doc=The request body, e.g. serialize(format='json', item=...)."`
	ContentType string            `vfilter:"optional,field=content_type,doc=Content-Type of the body (default application/json)."`
	Headers     *ordereddict.Dict `vfilter:"optional,field=headers,doc=Extra request headers (a dict of strings)."`
	SkipVerify  bool              `vfilter:"optional,field=skip_verify,doc=Do not verify the receiver's TLS certificate (default false: verified against the system roots, the Velociraptor CA and root_ca). Refused when the server's TLS policy is THUMBPRINT_ONLY."`
	RootCA      string            `vfilter:"optional,field=root_ca,doc=Extra root certificates (PEM) to trust for the receiver, a better choice than skip_verify for a receiver with its own CA."`
	Timeout     float64           `vfilter:"optional,field=timeout,doc=Seconds to wait for the receiver's answer to one request (default 10)."`
	RetryDelay  float64           `vfilter:"optional,field=retry_delay,doc=Seconds before the first retry of a failed delivery; doubles at each attempt (default 1)."`
	MaxDelay    float64           `vfilter:"optional,field=max_delay,doc=Longest wait between two attempts, in seconds (default 60)."`
	QueueSize   int64             `vfilter:"optional,field=queue_size,doc=Most alerts kept waiting while the receiver fails (default 1000); when full, the oldest is dropped and counted."`
	KeepBytes   int64             `vfilter:"optional,field=response_size,doc=Bytes of the receiver's answer returned in Response (default 200, at most 1048576)."`
}

// config is a validated WebhookArgs without the body: what identifies one
// receiver, hence one Sender and one queue, within a query.
type config struct {
	url         *url.URL
	secret      string
	contentType string
	headers     http.Header
	skipVerify  bool
	rootCA      string
	timeout     time.Duration
	retryDelay  time.Duration
	maxDelay    time.Duration
	queueSize   int
	keepBytes   int
}

// seconds converts an optional seconds argument, applying def when absent.
func seconds(raw *ordereddict.Dict, field string, v, def float64) (time.Duration, error) {
	if _, ok := raw.Get(field); !ok {
		v = def
	}
	if math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 || v > 86400 {
		return 0, fmt.Errorf("%s must be a number of seconds above 0 (at most a day), not %v", field, v)
	}
	return time.Duration(v * float64(time.Second)), nil
}

// parseConfig validates the arguments. Errors never quote the URL.
func parseConfig(a *WebhookArgs, raw *ordereddict.Dict) (*config, error) {
	c := &config{secret: a.Secret, contentType: "application/json",
		skipVerify: a.SkipVerify, rootCA: a.RootCA, queueSize: 1000, keepBytes: 200,
		headers: http.Header{}}
	if a.URL == "" && a.Secret == "" {
		return nil, errors.New("url or secret is required")
	}
	if a.URL != "" && a.Secret == "" {
		u, err := url.Parse(a.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, errors.New("url must be an absolute http:// or https:// URL (not repeated here: it may hold a token)")
		}
		c.url = u
	}
	if a.ContentType != "" {
		c.contentType = a.ContentType
	}
	var err error
	if c.timeout, err = seconds(raw, "timeout", a.Timeout, 10); err != nil {
		return nil, err
	}
	if c.retryDelay, err = seconds(raw, "retry_delay", a.RetryDelay, 1); err != nil {
		return nil, err
	}
	if c.maxDelay, err = seconds(raw, "max_delay", a.MaxDelay, 60); err != nil {
		return nil, err
	}
	if _, ok := raw.Get("queue_size"); ok {
		if a.QueueSize < 1 || a.QueueSize > 1_000_000 {
			return nil, fmt.Errorf("queue_size must be between 1 and 1000000, not %d", a.QueueSize)
		}
		c.queueSize = int(a.QueueSize)
	}
	if _, ok := raw.Get("response_size"); ok {
		if a.KeepBytes < 0 || a.KeepBytes > 1<<20 {
			return nil, fmt.Errorf("response_size must be between 0 and 1048576, not %d", a.KeepBytes)
		}
		c.keepBytes = int(a.KeepBytes)
	}
	return c, nil
}

// key identifies the receiver and its settings (hashed: it holds the URL).
func (c *config) key(headers *ordereddict.Dict) string {
	h := sha256.New()
	u := ""
	if c.url != nil {
		u = c.url.String()
	}
	fmt.Fprintf(h, "%q %q %q %v %q %v %v %v %d %d", u, c.secret, c.contentType,
		c.skipVerify, c.rootCA, c.timeout, c.retryDelay, c.maxDelay, c.queueSize, c.keepBytes)
	if headers != nil {
		for _, k := range headers.Keys() {
			v, _ := headers.Get(k)
			fmt.Fprintf(h, " %q=%q", k, fmt.Sprint(v))
		}
	}
	return "$netwatch_webhook:" + hex.EncodeToString(h.Sum(nil))
}

// resolveSecret fills the URL and TLS settings from a managed secret,
// checked against the query's principal like http_client() does.
func (c *config) resolveSecret(ctx context.Context, scope vfilter.Scope) error {
	server, ok := vql_subsystem.GetServerConfig(scope)
	if !ok {
		return errors.New("secrets can only be used on the server")
	}
	svc, err := services.GetSecretsService(server)
	if err != nil {
		return err
	}
	s, err := svc.GetSecret(ctx, vql_subsystem.GetPrincipal(scope),
		constants.HTTP_SECRETS, c.secret)
	if err != nil {
		return fmt.Errorf("secret %q: %w", c.secret, err)
	}
	u, err := url.Parse(s.GetString("url"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("secret %q: its url must be an absolute http:// or https:// URL", c.secret)
	}
	c.url = u
	s.UpdateString("root_ca", &c.rootCA)
	s.UpdateBool("skip_verify", &c.skipVerify)
	extra, err := s.GetDict("extra_headers")
	if err == nil && extra != nil {
		for _, k := range extra.Keys() {
			v, _ := extra.Get(k)
			c.headers.Set(k, fmt.Sprint(v))
		}
	}
	return nil
}

// client builds the HTTP client with Velociraptor's transport (proxy, DNS
// and TLS settings of the config; the Velociraptor CA trusted) and the
// verification the arguments ask for.
func (c *config) client(scope vfilter.Scope) (*http.Client, error) {
	cfg, _ := artifacts.GetConfig(scope)
	transport, err := networking.GetNewHttpTransport(cfg, c.rootCA)
	if err != nil {
		return nil, fmt.Errorf("root_ca: %w", err)
	}
	if c.skipVerify {
		if cfg == nil {
			transport.TLSClientConfig.InsecureSkipVerify = true
			transport.TLSClientConfig.VerifyConnection = nil
		} else if err := networking.EnableSkipVerify(transport.TLSClientConfig, cfg); err != nil {
			return nil, fmt.Errorf("skip_verify: %w", err)
		}
	}
	return &http.Client{Timeout: c.timeout, Transport: transport}, nil
}

type WebhookFunction struct{}

func (WebhookFunction) Call(ctx context.Context, scope vfilter.Scope,
	args *ordereddict.Dict) vfilter.Any {
	defer vql_subsystem.RegisterMonitor(ctx, functionName, args)()

	// Argument and setup errors are logged at ERROR level, so that the
	// query is marked failed (see netstat_watch).
	if err := vql_subsystem.CheckAccess(scope, acls.NETWORK); err != nil {
		scope.Error("%s: %v", functionName, err)
		return vfilter.Null{}
	}
	a := &WebhookArgs{}
	if err := arg_parser.ExtractArgsWithContext(ctx, scope, args, a); err != nil {
		scope.Error("%s: %v", functionName, redactArgError(err, a))
		return vfilter.Null{}
	}
	c, err := parseConfig(a, args)
	if err != nil {
		scope.Error("%s: %v", functionName, err)
		return vfilter.Null{}
	}

	// One Sender (one queue) per receiver per query, living as long as
	// the query: the retry loop outlives this call.
	root := vql_subsystem.GetRootScope(scope)
	key := c.key(a.Headers)
	var sender *Sender
	switch v := vql_subsystem.CacheGet(root, key).(type) {
	case *Sender:
		sender = v
	case setupError:
		// Said once already: a missing secret must not log per alert.
		return vfilter.Null{}
	default:
		var err error
		if sender, err = startSender(ctx, scope, root, c, a.Headers); err != nil {
			scope.Error("%s: %v", functionName, err)
			vql_subsystem.CacheSet(root, key, setupError{err})
			return vfilter.Null{}
		}
		vql_subsystem.CacheSet(root, key, sender)
	}

	r := sender.Send([]byte(a.Data))
	return ordereddict.NewDict().
		Set("Status", r.Status()).
		Set("Outcome", string(r.Outcome)).
		Set("Code", r.Code).
		Set("Response", r.Response).
		Set("Waiting", r.Waiting)
}

// setupError marks a receiver that could not be set up in this query.
type setupError struct{ error }

// startSender resolves the secret, builds the client and starts a Sender
// that ends with the root scope (the query).
func startSender(ctx context.Context, scope, root vfilter.Scope, c *config,
	extra *ordereddict.Dict) (*Sender, error) {
	if c.secret != "" {
		if err := c.resolveSecret(ctx, scope); err != nil {
			return nil, err
		}
	}
	client, err := c.client(scope)
	if err != nil {
		return nil, err
	}
	header := c.headers.Clone()
	header.Set("Content-Type", c.contentType)
	if extra != nil {
		for _, k := range extra.Keys() {
			v, _ := extra.Get(k)
			header.Set(k, fmt.Sprint(v))
		}
	}
	sender := New(context.Background(), Options{
		URL: c.url, Client: client, Header: header,
		RetryDelay: c.retryDelay, MaxDelay: c.maxDelay, QueueSize: c.queueSize,
		KeepBytes: c.keepBytes,
		Logf: func(format string, args ...any) {
			root.Log("%s: "+format, append([]any{functionName}, args...)...)
		},
	})
	if err := root.AddDestructor(sender.Close); err != nil {
		// The query is already ending: nothing would retry.
		sender.Close()
		return nil, err
	}
	return sender, nil
}

// redactArgError keeps a URL given in a wrongly typed argument out of the
// log: arg_parser quotes values in its errors.
func redactArgError(err error, a *WebhookArgs) string {
	return redact(err.Error(), []string{a.URL}, 300)
}

func (WebhookFunction) Info(scope vfilter.Scope, type_map *vfilter.TypeMap) *vfilter.FunctionInfo {
	return &vfilter.FunctionInfo{
		Name: functionName,
		Doc: "POST a payload to a webhook receiver, in order, queueing and retrying " +
			"it with doubling delays while the receiver is down, slow or failing; " +
			"never logs or returns the URL.",
		ArgType:  type_map.AddType(scope, &WebhookArgs{}),
		Metadata: vql_subsystem.VQLMetadata().Permissions(acls.NETWORK).Build(),
	}
}

func init() {
	vql_subsystem.RegisterFunction(&WebhookFunction{})
}

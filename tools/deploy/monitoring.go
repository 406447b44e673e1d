package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Client is the enrolled client of a deployment.
type Client struct {
	ID   string `json:"client_id"`
	Fqdn string `json:"fqdn"`
}

// WaitClient waits (bounded by ctx) until a client has enrolled and been
// interrogated (its FQDN is known), and returns the most recently seen one.
func (d *Deployment) WaitClient(ctx context.Context) (Client, error) {
	var last error
	for {
		rows, err := d.Query(ctx, `
SELECT client_id, os_info.fqdn AS fqdn, os_info.hostname AS hostname, last_seen_at
FROM clients()
ORDER BY last_seen_at DESC
LIMIT 1`, nil)
		if err == nil && len(rows) > 0 {
			c := Client{ID: str(rows[0]["client_id"]), Fqdn: str(rows[0]["fqdn"])}
			if c.Fqdn == "" {
				c.Fqdn = str(rows[0]["hostname"])
			}
			if c.ID != "" && c.Fqdn != "" {
				return c, nil
			}
			last = fmt.Errorf("client %s not interrogated yet", c.ID)
		} else if err != nil {
			last = err
		} else {
			last = fmt.Errorf("no client enrolled yet")
		}
		select {
		case <-ctx.Done():
			return Client{}, fmt.Errorf("waiting for the client to enrol: %v (%v)", ctx.Err(), last)
		case <-d.done:
			return Client{}, fmt.Errorf("velociraptor exited while waiting for the client:\n%s", d.LogTail(20))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// SetClientMonitoring adds (or replaces) artifact in the client monitoring
// table of all clients, with parameters (artifact parameter values as
// strings).
func (d *Deployment) SetClientMonitoring(ctx context.Context, artifact string, params map[string]string) error {
	return d.setMonitoring(ctx, "add_client_monitoring", artifact, params)
}

// SetServerMonitoring adds (or replaces) artifact in the server monitoring
// table, with parameters.
func (d *Deployment) SetServerMonitoring(ctx context.Context, artifact string, params map[string]string) error {
	return d.setMonitoring(ctx, "add_server_monitoring", artifact, params)
}

func (d *Deployment) setMonitoring(ctx context.Context, fn, artifact string, params map[string]string) error {
	if params == nil {
		params = map[string]string{}
	}
	p, err := json.Marshal(params)
	if err != nil {
		return err
	}
	// The values travel as query variables, so no quoting of VQL is needed.
	// (Not named Artifact: that name is the artifact plugin namespace.)
	rows, err := d.Query(ctx, fmt.Sprintf(`
SELECT %s(artifact=NetwatchArtifact, parameters=parse_json(data=NetwatchParams)) != NULL AS Ok
FROM scope()`, fn), map[string]string{"NetwatchArtifact": artifact, "NetwatchParams": string(p)})
	if err != nil {
		return fmt.Errorf("%s(%s): %w", fn, artifact, err)
	}
	if len(rows) != 1 || rows[0]["Ok"] != true {
		return fmt.Errorf("%s(%s) failed: %v", fn, artifact, rows)
	}
	return nil
}

// ArtifactExists tells whether the server knows artifact.
func (d *Deployment) ArtifactExists(ctx context.Context, name string) (bool, error) {
	rows, err := d.Query(ctx, `SELECT name FROM artifact_definitions(names=NetwatchName)`,
		map[string]string{"NetwatchName": name})
	if err != nil {
		return false, err
	}
	return len(rows) > 0, nil
}

func str(v any) string {
	if v == nil {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

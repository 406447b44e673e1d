package deploy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// NotebookTable is the table of a notebook cell.
type NotebookTable struct {
	NotebookID string
	CellID     string
	d          *Deployment
	query      url.Values // the GUI's v1/GetTable parameters for it
}

// csvViewer finds the table of a rendered notebook cell: the GUI fetches
// it from v1/GetTable with these (URL-encoded JSON) parameters, and
// downloads it from v1/DownloadTable with the same ones.
var csvViewer = regexp.MustCompile(`<velo-csv-viewer[^>]*\sparams='([^']*)'`)

// Notebook is the GUI's notebook path, through the API: it creates a
// notebook named name and runs vql in a VQL cell of it. Download then
// fetches the cell's table as the GUI's download buttons do.
func (d *Deployment) Notebook(ctx context.Context, name, vql string) (*NotebookTable, error) {
	rows, err := d.Query(ctx, `
LET NetwatchNotebook <= notebook_create(name=NetwatchName)
LET NetwatchCell <= notebook_update_cell(notebook_id=NetwatchNotebook.notebook_id,
                                         type="vql", input=NetwatchVQL)
SELECT NetwatchNotebook.notebook_id AS NotebookId,
       NetwatchCell.cell_metadata[-1] AS Cell
FROM scope()`, map[string]string{"NetwatchName": name, "NetwatchVQL": vql})
	if err != nil {
		return nil, err
	}
	if len(rows) != 1 {
		return nil, fmt.Errorf("notebook: %d rows", len(rows))
	}
	var cell struct {
		CellID   string   `json:"cell_id"`
		Output   string   `json:"output"`
		Messages []string `json:"messages"`
	}
	b, _ := json.Marshal(rows[0]["Cell"])
	if err := json.Unmarshal(b, &cell); err != nil {
		return nil, err
	}
	nt := &NotebookTable{NotebookID: str(rows[0]["NotebookId"]), CellID: cell.CellID, d: d}
	m := csvViewer.FindStringSubmatch(cell.Output)
	if m == nil {
		return nt, fmt.Errorf("notebook cell %s has no table (messages %v): %.300s", cell.CellID, cell.Messages, cell.Output)
	}
	raw, err := url.QueryUnescape(m[1])
	if err != nil {
		return nt, err
	}
	var params map[string]any
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&params); err != nil {
		return nt, fmt.Errorf("table parameters %q: %w", raw, err)
	}
	q := url.Values{}
	for k, v := range params {
		switch v := v.(type) {
		case string:
			if v != "" {
				q.Set(k, v)
			}
		case json.Number:
			q.Set(k, v.String())
		case bool:
			q.Set(k, fmt.Sprint(v))
		}
	}
	nt.query = q
	return nt, nil
}

// Download fetches the table as format: "csv", or "json" (one JSON object
// per line), from the GUI's v1/DownloadTable, logged in as the GUI user.
func (t *NotebookTable) Download(ctx context.Context, format string) ([]byte, error) {
	q := url.Values{}
	for k, v := range t.query {
		q[k] = v
	}
	q.Set("download_format", format)
	return t.d.guiGet(ctx, "api/v1/DownloadTable?"+q.Encode())
}

// guiGet fetches path from the GUI, logged in as the GUI user.
func (d *Deployment) guiGet(ctx context.Context, path string) ([]byte, error) {
	u := d.GUIURL + path
	if host, _, _ := net.SplitHostPort(mustHost(d.GUIURL)); host != "127.0.0.1" {
		return nil, fmt.Errorf("GUI %s is not on 127.0.0.1", d.GUIURL)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(GUIUser, GUIPassword)
	client := &http.Client{
		Timeout: 60 * time.Second,
		// The GUI's certificate is self-signed; this client only ever
		// talks to 127.0.0.1.
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d: %.200s", path, resp.StatusCode, body)
	}
	return body, nil
}

func mustHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}

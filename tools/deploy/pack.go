package deploy

import (
	"archive/zip"
	"context"
	"fmt"
	"io"
	"path"
	"regexp"
	"sort"
)

// ImportPack loads every artifact of an artifact pack (the zip `make pack`
// writes) into the server, as the GUI's "Upload Artifact Pack" does, and
// returns their names. It is how a stock server gets the netwatch
// artifacts: built-ins of the custom binary, custom artifacts there.
func (d *Deployment) ImportPack(ctx context.Context, zipPath string) ([]string, error) {
	zr, err := zip.OpenReader(zipPath)
	if err != nil {
		return nil, fmt.Errorf("deploy: artifact pack: %w (run make pack)", err)
	}
	defer zr.Close()

	files := append([]*zip.File(nil), zr.File...)
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	var names []string
	for _, f := range files {
		if ext := path.Ext(f.Name); ext != ".yaml" && ext != ".yml" {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			return names, err
		}
		def, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return names, fmt.Errorf("deploy: %s in %s: %w", f.Name, zipPath, err)
		}
		// The definition travels as a query variable: no quoting of VQL.
		rows, err := d.Query(ctx, `SELECT artifact_set(definition=NetwatchDefinition).name AS Name FROM scope()`,
			map[string]string{"NetwatchDefinition": string(def)})
		if err != nil {
			return names, fmt.Errorf("deploy: importing %s: %w", f.Name, err)
		}
		if len(rows) != 1 || str(rows[0]["Name"]) == "" {
			return names, fmt.Errorf("deploy: importing %s: the server did not accept it: %v", f.Name, rows)
		}
		names = append(names, str(rows[0]["Name"]))
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("deploy: no artifact in %s", zipPath)
	}
	return names, nil
}

// Version is the Velociraptor release the server binary reports, e.g.
// "0.77.2".
func (d *Deployment) Version(ctx context.Context) (string, error) {
	out, err := d.run(ctx, "version")
	if err != nil {
		return "", err
	}
	m := regexp.MustCompile(`(?m)^version: *(\S+)`).FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("deploy: no version in %q", out)
	}
	return string(m[1]), nil
}

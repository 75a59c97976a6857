package dashboard

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// uplotSum is uplot.sum.json: what `make dashboard-assets` copied, from which
// package version.
type uplotSum struct {
	Package   string            `json:"package"`
	Version   string            `json:"version"`
	Integrity string            `json:"integrity"`
	Files     map[string]string `json:"files"`
}

// TestVendoredAssetsMatchLock fails when static/vendor/uplot is stale (the
// version pinned in package-lock.json moved without `make dashboard-assets`)
// or was edited by hand (a file's sha256 differs from the one recorded when
// it was copied from npm), or when a file was added or removed there.
func TestVendoredAssetsMatchLock(t *testing.T) {
	var sum uplotSum
	readJSON(t, "uplot.sum.json", &sum)
	var lock struct {
		Packages map[string]struct {
			Version   string `json:"version"`
			Integrity string `json:"integrity"`
		} `json:"packages"`
	}
	readJSON(t, "package-lock.json", &lock)
	pinned, ok := lock.Packages["node_modules/"+sum.Package]
	if !ok {
		t.Fatalf("package-lock.json pins no %s; uplot.sum.json names it", sum.Package)
	}
	if pinned.Version != sum.Version || pinned.Integrity != sum.Integrity {
		t.Fatalf("static/vendor/uplot holds %s %s (%s) but package-lock.json pins %s (%s): run `make dashboard-assets`",
			sum.Package, sum.Version, sum.Integrity, pinned.Version, pinned.Integrity)
	}

	dir := filepath.Join("static", "vendor", "uplot")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var onDisk, recorded []string
	for _, e := range entries {
		onDisk = append(onDisk, e.Name())
	}
	for name := range sum.Files {
		recorded = append(recorded, name)
	}
	sort.Strings(recorded)
	if len(onDisk) != len(recorded) {
		t.Fatalf("%s holds %v; uplot.sum.json records %v: run `make dashboard-assets`", dir, onDisk, recorded)
	}
	for _, name := range recorded {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%v: run `make dashboard-assets`", err)
		}
		got := sha256.Sum256(data)
		if hex.EncodeToString(got[:]) != sum.Files[name] {
			t.Errorf("%s/%s differs from the file npm delivered for %s %s (edited by hand?): run `make dashboard-assets`",
				dir, name, sum.Package, sum.Version)
		}
	}
	for _, need := range []string{"uPlot.iife.min.js", "uPlot.min.css", "LICENSE"} {
		if _, ok := sum.Files[need]; !ok {
			t.Errorf("the page needs %s/%s, which is not vendored", dir, need)
		}
	}
}

func readJSON(t *testing.T, name string, v any) {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

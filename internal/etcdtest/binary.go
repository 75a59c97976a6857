package etcdtest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// etcdPackage is the etcd binary's main package, pinned in tools/etcd/go.mod.
const etcdPackage = "go.etcd.io/etcd/server/v3"

var binary struct {
	once sync.Once
	path string
	err  error
}

// Binary returns the path of the etcd binary the clusters run, failing tb
// when there is none. In order, it is:
//
//   - $VARBRIDGE_ETCD_BIN (make test sets it to the .bin/etcd make build made);
//   - .bin/etcd at the repository's root, when present;
//   - otherwise the binary built from tools/etcd, at most once per version
//     per machine, in the user's cache directory, so that `go test ./...`
//     works on a fresh clone without make.
//
// The repository's root is found from the working directory, which go test
// sets to the package's directory.
func Binary(tb testing.TB) string {
	tb.Helper()
	binary.once.Do(func() { binary.path, binary.err = findBinary() })
	if binary.err != nil {
		tb.Fatalf("etcdtest: %v", binary.err)
	}
	return binary.path
}

func findBinary() (string, error) {
	if bin := os.Getenv("VARBRIDGE_ETCD_BIN"); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("VARBRIDGE_ETCD_BIN: %w", err)
		}
		return bin, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	if bin := filepath.Join(root, ".bin", "etcd"); isFile(bin) {
		return bin, nil
	}
	return buildCached(filepath.Join(root, "tools", "etcd"))
}

// repoRoot is the nearest directory above the working directory that holds
// tools/etcd/go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if isFile(filepath.Join(dir, "tools", "etcd", "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no tools/etcd/go.mod above the working directory: set VARBRIDGE_ETCD_BIN to an etcd binary")
		}
		dir = parent
	}
}

// buildCached builds etcd from the tools module into a cache directory named
// for a hash of that module's go.mod and go.sum, so that a new pin builds a
// new binary and an unchanged one is built once. Test binaries of several
// packages may get here at the same time: each builds into a directory of
// its own and renames the result into place, which is atomic, so none runs
// a half-written file and the last rename wins with identical content.
func buildCached(toolsDir string) (string, error) {
	h := sha256.New()
	for _, name := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(toolsDir, name))
		if err != nil {
			return "", err
		}
		h.Write(b)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "varbridge-etcdtest", hex.EncodeToString(h.Sum(nil))[:16])
	bin := filepath.Join(dir, "etcd")
	if isFile(bin) {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("go", "build", "-o", filepath.Join(tmp, "etcd"), etcdPackage)
	cmd.Dir = toolsDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building etcd in %s: %v\n%s", toolsDir, err, out)
	}
	if err := os.Rename(filepath.Join(tmp, "etcd"), bin); err != nil {
		return "", err
	}
	return bin, nil
}

func isFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

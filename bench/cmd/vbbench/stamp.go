package main

import (
	"bytes"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

// Stamp says what produced a results file: figures quoted anywhere must
// come from a file stamped with the commit they measured, its date, the
// versions of everything measured and how loaded the machine was.
type Stamp struct {
	Commit   string            `json:"commit"`
	Dirty    bool              `json:"dirty"` // uncommitted changes when it ran: not a figure to quote
	Date     string            `json:"date"`  // UTC, RFC 3339, when the run began
	Versions map[string]string `json:"versions"`
	CPUs     int               `json:"cpus"`
	Load1m   [2]float64        `json:"load_1m"` // at the start and at the end
	Smoke    bool              `json:"smoke"`
	Runs     int               `json:"runs"`
}

// File is results.json.
type File struct {
	Stamp   Stamp    `json:"stamp"`
	Results []Result `json:"results"`
}

func newStamp(c *config, began time.Time) Stamp {
	s := Stamp{
		Commit: cmdOut("git", "rev-parse", "HEAD"),
		Dirty:  cmdOut("git", "status", "--porcelain", "--untracked-files=no") != "",
		Date:   began.UTC().Format(time.RFC3339),
		CPUs:   runtime.NumCPU(), Smoke: c.smoke, Runs: c.runs,
		Versions: map[string]string{"go": runtime.Version()},
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			switch d.Path {
			case "google.golang.org/grpc", "google.golang.org/protobuf", "github.com/nats-io/nats-server/v2", "github.com/nats-io/nats.go",
				"go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/client/v3":
				s.Versions[d.Path] = d.Version
			}
		}
	}
	if c.python != "" {
		py := cmdOut(c.python, "-c", `import sys, importlib.metadata as m
v = lambda p: m.version(p) if p in {d.metadata["Name"] for d in m.distributions()} else "absent"
print(sys.version.split()[0], v("grpcio"), v("protobuf"), v("nats-py"))`)
		if f := strings.Fields(py); len(f) == 4 {
			s.Versions["python"], s.Versions["grpcio"], s.Versions["python protobuf"], s.Versions["nats-py"] = f[0], f[1], f[2], f[3]
		}
	}
	return s
}

// cmdOut runs a command and returns its trimmed output, or "unknown".
func cmdOut(name string, args ...string) string {
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return "unknown"
	}
	return strings.TrimSpace(out.String())
}

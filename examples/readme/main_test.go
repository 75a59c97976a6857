package main

import (
	"bytes"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
)

// TestExampleRuns runs the README's Go example against a real server and
// checks what it prints.
func TestExampleRuns(t *testing.T) {
	srv := servertest.Start(t, store.Options{})
	t.Setenv("VARBRIDGE_ADDR", srv.Addr)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	main()
	os.Stdout = stdout
	w.Close()
	var out bytes.Buffer
	if _, err := io.Copy(&out, r); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if !strings.Contains(got, "temperature 0.7 -> 0.9 by go\n") || !regexp.MustCompile(`rejected: .*max`).MatchString(got) {
		t.Fatalf("the example printed:\n%s", got)
	}
	if n := srv.Store.SessionCount(); n != 0 {
		t.Fatalf("the example left %d sessions", n)
	}
}

// TestReadmeQuotesTheExamples keeps README.md's code blocks identical to the
// programs the tests run.
func TestReadmeQuotesTheExamples(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ file, lang string }{{"main.go", "go"}, {"example.py", "python"}} {
		src, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		body := string(src)
		// The file's own doc line is not part of the README's block.
		body = body[strings.Index(body, "\n")+1:]
		if tc.lang == "python" {
			body = strings.TrimLeft(body, "\n")
		}
		block := "```" + tc.lang + "\n" + strings.TrimLeft(body, "\n") + "```"
		if !strings.Contains(string(readme), block) {
			t.Errorf("README.md has no ```%s block equal to examples/readme/%s (after its first line)", tc.lang, tc.file)
		}
	}
}

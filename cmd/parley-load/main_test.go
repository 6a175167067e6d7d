package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parley-im/parley/loadtest"
)

// TestHelp: -help is no failure, lists the flags on stdout and explains
// the report's terms; a bad flag is one line on stderr and status 2.
func TestHelp(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"-help"}, &out, &errOut); code != 0 || errOut.Len() != 0 {
		t.Errorf("-help: exit %d, stderr %q", code, errOut.String())
	}
	for _, want := range []string{"-scenario name", "-html file", "uncorrected", "ops/commit", "skipped"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("-help lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	errOut.Reset()
	if code := run([]string{"--bogus"}, &out, &errOut); code != 2 || out.Len() != 0 ||
		errOut.String() != "parley-load: flag provided but not defined: -bogus (parley-load -help lists the flags)\n" {
		t.Errorf("bad flag: exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}
}

// TestReportSaysWhereItWrote: --html says which file it wrote.
func TestReportSaysWhereItWrote(t *testing.T) {
	name := filepath.Join(t.TempDir(), "report.html")
	var out, errOut bytes.Buffer
	report(&loadtest.Result{Scenario: "pairs", Passed: true}, true, name, &out, &errOut)
	if errOut.String() != "wrote "+name+"\n" {
		t.Errorf("stderr %q", errOut.String())
	}
	if b, err := os.ReadFile(name); err != nil || !bytes.Contains(b, []byte("<svg")) {
		t.Errorf("report file: %v", err)
	}
	if !strings.HasPrefix(out.String(), `{"scenario":"pairs"`) {
		t.Errorf("stdout %q", out.String())
	}
}

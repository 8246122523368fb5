package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestValidateExampleModels(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"validate", "../../models"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut.String())
	}
	if !strings.HasPrefix(out.String(), "ok:") {
		t.Errorf("stdout = %q", out.String())
	}
}

// A file with several different mistakes: exit 1 and every one of them,
// each as file:line:col: message.
func TestValidateReportsEveryMistake(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"validate", "../../testdata/broken/line.yaml"}, &out, &errOut)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, errOut.String())
	}
	got := errOut.String()
	const f = "../../testdata/broken/line.yaml"
	for _, want := range []string{
		f + ":11:9: unknown key \"adress\" (did you mean \"address\"?)",
		f + ":15:15:", // int17
		f + ":18:18:", // holding:70000
		f + ":21:15:", // float32 on a coil
		f + ":23:16: expression: unknown name \"sped\" (did you mean \"speed\"?)",
		f + ":25:29: expression:", // incomplete expression
		f + ":31:3:",              // "filler 2"
		f + ":32:11:",             // Filer
		f + ":34:3:",              // duplicate asset
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q", want)
		}
	}
	if t.Failed() {
		t.Logf("stderr:\n%s", got)
	}
}

func TestUnknownCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"frobnicate"}, &out, &errOut); code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
}

package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateExampleModels(t *testing.T) {
	rep, err := Validate("../models")
	if err != nil {
		t.Fatalf("example models do not validate:\n%v", err)
	}
	if rep.Tags == 0 || rep.Assets == 0 {
		t.Errorf("report = %+v", rep)
	}
}

// A config naming its models is validated with them, including that the
// sources the models use exist.
func TestValidateConfigChecksSources(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("m.yaml", pumpModel)
	write("gw.yaml", "id: gw\nmodels: [m.yaml]\nsources:\n  plc1: {url: \"tcp://127.0.0.1:502\"}\n  plc3: {url: \"tcp://127.0.0.1:502\"}\n")
	_, err := Validate(filepath.Join(dir, "gw.yaml"))
	if err == nil {
		t.Fatal("unknown source plc2 not reported")
	}
	if !strings.Contains(err.Error(), `m.yaml:`) || !strings.Contains(err.Error(), `unknown source "plc2"`) {
		t.Errorf("error does not point into the model file: %v", err)
	}
	write("gw.yaml", "id: gw\nmodels: [m.yaml]\nsources:\n  plc1: {url: \"tcp://127.0.0.1:502\"}\n  plc2: {url: \"tcp://127.0.0.1:502\"}\n")
	if _, err := Validate(dir); err != nil {
		t.Errorf("valid folder rejected: %v", err)
	}
}

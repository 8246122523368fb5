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

// A tag whose address is of the other protocol than its source is reported
// at the asset's source key, naming both.
func TestValidateProtocolMismatch(t *testing.T) {
	dir := t.TempDir()
	model := "levels: [a, b]\ntypes:\n  U:\n    tags:\n      speed: {address: \"ns=2;s=Speed\"}\n  M:\n    tags:\n      temp: {address: \"holding:1\"}\n" +
		"assets:\n  x/ua: {type: U, source: plc1}\n  x/mb: {type: M, source: ua1}\n  x/ok: {type: U, source: ua1}\n"
	if err := os.WriteFile(filepath.Join(dir, "m.yaml"), []byte(model), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := "id: gw\nmodels: [m.yaml]\nsources:\n  plc1: {url: \"tcp://127.0.0.1:502\"}\n  ua1: {url: \"opc.tcp://127.0.0.1:4840\"}\n"
	if err := os.WriteFile(filepath.Join(dir, "gw.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Validate(filepath.Join(dir, "gw.yaml"))
	if err == nil {
		t.Fatal("protocol mismatch not reported")
	}
	for _, want := range []string{
		`m.yaml:10:27: asset x/ua: tag speed has an OPC UA address "ns=2;s=Speed", but source "plc1" is a Modbus source (tcp://127.0.0.1:502)`,
		`m.yaml:11:27: asset x/mb: tag temp has a Modbus address "holding:1", but source "ua1" is an OPC UA source (opc.tcp://127.0.0.1:4840)`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "x/ok") {
		t.Errorf("matching protocol reported: %v", err)
	}
}

// A Kafka route by asset type must name a type the model's assets have;
// a route needs match, type or both.
func TestValidateKafkaRouteTypes(t *testing.T) {
	dir := t.TempDir()
	model := "levels: [a, b]\ntypes:\n  Pump:\n    tags:\n      temp: {address: \"holding:1\"}\n" +
		"assets:\n  x/p1: {type: Pump, source: plc1}\n"
	if err := os.WriteFile(filepath.Join(dir, "m.yaml"), []byte(model), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := "id: gw\nmodels: [m.yaml]\nsources:\n  plc1: {url: \"tcp://127.0.0.1:502\"}\nsinks:\n  kafka:\n    brokers: [\"127.0.0.1:9092\"]\n" +
		"    routes:\n      - {type: Pump, topic: uns.v1.pumps}\n      - {type: Pumpe, topic: uns.v1.x}\n"
	if err := os.WriteFile(filepath.Join(dir, "gw.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Validate(filepath.Join(dir, "gw.yaml"))
	want := `gw.yaml:10:16: sinks.kafka.routes[1].type "Pumpe": no asset of the model has this type (types: Pump)`
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "routes[0]") {
		t.Fatalf("Validate = %v, want %q only", err, want)
	}

	cfg = "id: gw\nmodels: [m.yaml]\nsinks:\n  kafka:\n    brokers: [\"127.0.0.1:9092\"]\n    routes:\n      - {topic: uns.v1.x}\n"
	if err := os.WriteFile(filepath.Join(dir, "gw.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Validate(filepath.Join(dir, "gw.yaml")); err == nil || !strings.Contains(err.Error(), "gw.yaml:7:9: sinks.kafka.routes[0]: give match") {
		t.Fatalf("Validate = %v", err)
	}
}

package gateway

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/unsgate/unsgate/model"
)

// ValidateReport summarises a successful Validate.
type ValidateReport struct {
	ModelFiles []string
	Configs    []string
	Assets     int
	Tags       int
}

func (r ValidateReport) String() string {
	return fmt.Sprintf("ok: %d model file(s), %d gateway config(s), %d asset(s), %d tag(s)",
		len(r.ModelFiles), len(r.Configs), r.Assets, r.Tags)
}

// configKeys are top-level keys only a gateway config has; a YAML file with
// any of them is validated as a config, every other one as a model file.
var configKeys = map[string]bool{"id": true, "sources": true, "sinks": true, "models": true, "broker": true, "data_dir": true}

// Validate checks model files, folders of model files and gateway configs
// without connecting anywhere. Model files given directly are loaded and
// compiled together as one model; each config is checked with its own
// models, including that every source the model names exists. The error is
// model.Diagnostics with every problem found, or an I/O error.
func Validate(paths ...string) (ValidateReport, error) {
	var rep ValidateReport
	var diags model.Diagnostics
	var modelFiles []string
	for _, p := range paths {
		files, err := yamlFiles(p)
		if err != nil {
			return rep, err
		}
		for _, f := range files {
			isConfig, err := looksLikeConfig(f)
			if err != nil {
				return rep, err
			}
			if isConfig {
				rep.Configs = append(rep.Configs, f)
			} else {
				modelFiles = append(modelFiles, f)
			}
		}
	}
	if len(modelFiles) > 0 {
		rep.ModelFiles = modelFiles
		m, plan, err := LoadModel(nil, modelFiles...)
		if collect(&diags, err) != nil {
			return rep, err
		}
		if m != nil {
			rep.Assets, rep.Tags = len(m.Assets), len(plan.Tags())
		}
	}
	for _, c := range rep.Configs {
		_, m, plan, err := Load(c)
		if collect(&diags, err) != nil {
			return rep, err
		}
		if m != nil && len(modelFiles) == 0 {
			rep.Assets, rep.Tags = rep.Assets+len(m.Assets), rep.Tags+len(plan.Tags())
		}
	}
	if len(paths) == 0 || len(modelFiles)+len(rep.Configs) == 0 {
		return rep, fmt.Errorf("no .yaml or .yml files in %s", strings.Join(paths, ", "))
	}
	return rep, diags.Err()
}

// collect moves diagnostics into diags and returns any other error.
func collect(diags *model.Diagnostics, err error) error {
	var ds model.Diagnostics
	if errors.As(err, &ds) {
		*diags = append(*diags, ds...)
		return nil
	}
	return err
}

func yamlFiles(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	return model.YAMLFiles(path)
}

func looksLikeConfig(path string) (bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return false, nil // the model loader reports what is wrong
	}
	top := doc.Content[0]
	for i := 0; i < len(top.Content); i += 2 {
		if configKeys[top.Content[i].Value] {
			return true, nil
		}
	}
	return false, nil
}

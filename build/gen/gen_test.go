package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGeneratedFilesMatchPluginCfg fails when plugin.cfg was edited without
// running `make generate`, or the generated files were edited by hand.
func TestGeneratedFilesMatchPluginCfg(t *testing.T) {
	files, err := generateFromFile("../../plugin.cfg")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join("../plugins", name))
		if err != nil {
			t.Fatalf("Generated file missing, run make generate: %v", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("build/plugins/%s disagrees with plugin.cfg: run make generate", name)
		}
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		cfg        string
		wantNames  []string
		errContent string
	}{
		{"# c\n\nreload:reload\nnodelocal:github.com/x/y/nodelocal\n", []string{"reload", "nodelocal"}, ""},
		{"reload\n", nil, `plugin.cfg:1: want name:package, got "reload"`},
		{"a:a\nb:b\na:c\n", nil, `plugin.cfg:3: plugin "a" already listed on line 1`},
		{"all:github.com/coredns/coredns/core/plugin\n", nil, "imports every stock plugin"},
		{"# only comments\n", nil, "no plugins listed"},
	}
	for i, tc := range tests {
		got, err := parse([]byte(tc.cfg), "plugin.cfg")
		if tc.errContent != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errContent) {
				t.Errorf("Test %d: want error containing %q, got %v", i, tc.errContent, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("Test %d: %v", i, err)
		}
		var names []string
		for _, e := range got {
			names = append(names, e.name)
		}
		if strings.Join(names, ",") != strings.Join(tc.wantNames, ",") {
			t.Errorf("Test %d: names %v, want %v", i, names, tc.wantNames)
		}
	}
}

// TestPluginCfgShape checks the order rules the lifecycle depends on.
func TestPluginCfgShape(t *testing.T) {
	data, err := os.ReadFile("../../plugin.cfg")
	if err != nil {
		t.Fatal(err)
	}
	plugins, err := parse(data, "plugin.cfg")
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, p := range plugins {
		pos[p.name] = i
	}
	for _, need := range []string{"reload", "bind", "ready", "health", "prometheus", "errors", "log", "nodelocal", "cache", "loop", "forward"} {
		if _, ok := pos[need]; !ok {
			t.Errorf("plugin.cfg lacks %s", need)
		}
	}
	if pos["nodelocal"] < pos["health"] {
		t.Errorf("nodelocal must follow health so its final shutdown runs after health's lameduck")
	}
	if pos["nodelocal"] > pos["cache"] {
		t.Errorf("nodelocal must come before cache in the query chain")
	}
}

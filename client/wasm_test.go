package client

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestClientBuildsForWasmWithoutGridPackages proves the SDK stays usable in a browser: it builds for
// GOOS=js GOARCH=wasm, and imports neither libp2p nor any node or service package.
func TestClientBuildsForWasmWithoutGridPackages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the SDK for wasm")
	}
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	env := append(os.Environ(), "GOOS=js", "GOARCH=wasm")
	list := exec.Command(gobin, "list", "-deps", "./...")
	list.Env = env
	out, err := list.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, bad := range []string{"libp2p", "/node", "/relay", "/keyregistry", "/gateway", "/chain", "/dht", "go-datastore"} {
			// The receipt format package is the one grid package built for clients: stdlib and CBOR only.
			if strings.Contains(dep, bad) && dep != "github.com/iagon/gridchat/relay/mailbox/receipt" {
				t.Errorf("the client depends on %s", dep)
			}
		}
	}
	build := exec.Command(gobin, "build", "-o", os.DevNull, "./...")
	build.Env = env
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("GOOS=js GOARCH=wasm go build: %v\n%s", err, out)
	}
}

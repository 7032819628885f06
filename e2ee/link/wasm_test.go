package link

import (
	"os"
	"os/exec"
	"testing"
)

// TestPackagesBuildForWasm builds this package and its siblings for the
// browser (GOOS=js GOARCH=wasm), as the web client needs.
func TestPackagesBuildForWasm(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go tool not found: %v", err)
	}
	cmd := exec.Command(goTool, "build", "../safety", "../backup", ".", "../internal/cpace")
	cmd.Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GOOS=js GOARCH=wasm go build: %v\n%s", err, out)
	}
}

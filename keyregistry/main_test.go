package keyregistry_test

import (
	"testing"

	"github.com/iagon/gridchat/internal/gridtest"
)

// TestMain fails the package if any test leaves goroutines running (nodes,
// directory loops, gossip subscriptions, publication logs).
func TestMain(m *testing.M) { gridtest.VerifyTestMain(m) }

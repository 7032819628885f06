package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/iagon/gridchat/client"
	"github.com/iagon/gridchat/e2ee"
)

// A message of a type this client does not support (from a newer client) is printed as such, never skipped.
func TestPrintMessageOfUnsupportedTypeAsksForAnUpdate(t *testing.T) {
	var alice e2ee.AccountID
	alice[0] = 1
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.Local)
	var out bytes.Buffer
	printMessage(&out, map[e2ee.AccountID]string{alice: "alice"}, client.Message{Sender: alice, Sent: at, Type: 42, Seq: 7, Unsupported: true})
	want := "[03:04:05] alice: [message of a type this client does not support (42); update gridchat]\n"
	if out.String() != want {
		t.Fatalf("printed %q, want %q", out.String(), want)
	}
}

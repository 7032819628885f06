package client_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/iagon/gridchat/client"
	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/e2ee/link"
)

// Both sides of a 1:1 conversation derive its ID from the two account IDs, so neither has to announce it.
func ExampleDirectConversationID() {
	alice, bob := e2ee.AccountID{1}, e2ee.AccountID{2}
	fmt.Println(client.DirectConversationID(alice, bob) == client.DirectConversationID(bob, alice))
	fmt.Println(client.DirectConversationID(alice, bob) == client.SelfConversationID(alice))
	// Output:
	// true
	// false
}

// A new device reads the invitation the old device shows, from a scanned QR payload or a typed short code.
func ExampleParseInvitation() {
	host, err := link.NewHost(link.KindShortCode, link.Options{})
	if err != nil {
		log.Fatal(err)
	}
	code, _ := host.ShortCode()
	ticket, err := client.ParseInvitation(nil, code)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ticket.Kind == link.KindShortCode, len(code))
	// Output: true 17
}

// PipeRelay connects the two devices of a linking run that live in one process.
func ExamplePipeRelay() {
	oldDevice, newDevice := client.PipeRelay()
	ctx := context.Background()
	_ = newDevice.Send(ctx, []byte("share"))
	f, _ := oldDevice.Recv(ctx)
	fmt.Printf("%s\n", f)
	// Output: share
}

// Backups go to a BlobStore; FileBlobStore keeps them in a local directory.
func ExampleFileBlobStore() {
	dir, _ := os.MkdirTemp("", "blobs")
	defer os.RemoveAll(dir)
	blobs := client.FileBlobStore{Dir: dir}
	ctx := context.Background()
	_ = blobs.Put(ctx, "gridchat-backup", []byte("encrypted archive"))
	b, _ := blobs.Get(ctx, "gridchat-backup")
	fmt.Printf("%s\n", b)
	// Output: encrypted archive
}

// The whole journey of a first device: register, find a contact, chat, and watch events. (Not run: it needs a
// grid; see the swarm tests.)
func Example() {
	ctx := context.Background()
	storeKey := make([]byte, 32) // from the platform keystore
	c, err := client.Register(ctx, client.Config{
		Dir:      "/var/lib/myapp/gridchat",
		StoreKey: storeKey,
		Gateways: []string{"http://127.0.0.1:8080"},
	}, "alice")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	conv, err := c.StartDirect(ctx, "bob")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.SendText(ctx, conv.ID, "hello bob"); err != nil {
		log.Fatal(err)
	}
	for ev := range c.Events() {
		switch ev := ev.(type) {
		case *client.MessageEvent:
			fmt.Println(ev.Message.Text)
		case *client.GapEvent:
			fmt.Println("missing", ev.Count, "messages:", ev.Reason)
		case *client.SafetyNumberEvent:
			fmt.Println("safety number changed; verify again")
		}
	}
}

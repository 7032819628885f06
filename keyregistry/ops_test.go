package keyregistry_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"

	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/gateway/gatewaytest"
	"github.com/iagon/gridchat/keyregistry"
	"github.com/iagon/gridchat/wire"
)

func decodeAccount(t testing.TB, raw json.RawMessage) keyregistry.AccountJSON {
	t.Helper()
	var a keyregistry.AccountJSON
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("account body %s: %v", raw, err)
	}
	return a
}

func TestNodeWebSocketOpsRegisterAppendAndLookUp(t *testing.T) {
	g := newGrid(t, 2)
	ctx := ctxT(t)
	c, err := gatewaytest.Dial(ctx, gatewaytest.WSURL(g.nodes[0].GatewayURL()), gatewaytest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	gid := c.Hello().GatewayID

	now := g.clock.Now()
	dev, _ := e2ee.NewDeviceKeys(now)
	chain, _ := e2ee.NewAccount(dev, now)
	raw, err := c.Call(ctx, keyregistry.OpNonce, keyregistry.NonceRequest{Device: dev.Public().Encode()})
	if err != nil {
		t.Fatal(err)
	}
	var grant keyregistry.NonceResponse
	if err := json.Unmarshal(raw, &grant); err != nil {
		t.Fatal(err)
	}
	proof, err := e2ee.SignRegistration(dev, gid, grant.Nonce, now)
	if err != nil {
		t.Fatal(err)
	}
	ans, err := dev.AnswerKeyChallenge(gid, grant.Nonce, grant.Challenge)
	if err != nil {
		t.Fatal(err)
	}
	reg := keyregistry.RegisterBody{Nonce: grant.Nonce, Chain: chain.Encode(), Proof: proof.Encode(), Answer: ans}
	raw, err = c.Call(ctx, keyregistry.OpRegister, reg)
	if err != nil {
		t.Fatal(err)
	}
	if a := decodeAccount(t, raw); a.Account != chain.AccountID().String() || len(a.Devices) != 1 {
		t.Fatalf("registered %+v", a)
	}

	// The same nonce again: a stable directory code on the wire.
	_, err = c.Call(ctx, keyregistry.OpRegister, reg)
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.Code(keyregistry.CodeNonceReplayed) || we.Reason != "directory_nonce_replayed" {
		t.Fatalf("replayed nonce: %v", err)
	}

	if _, err := chain.Append(dev, &e2ee.SetUsername{Username: "cheshire"}, g.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(ctx, keyregistry.OpAppend, keyregistry.AppendBody{Chain: chain.Encode()}); err != nil {
		t.Fatal(err)
	}
	for op, body := range map[string]any{
		keyregistry.OpAccount:  keyregistry.AccountQuery{Account: chain.AccountID().String()},
		keyregistry.OpDevice:   keyregistry.DeviceQuery{Device: dev.ID().String()},
		keyregistry.OpUsername: keyregistry.UsernameQuery{Username: "Cheshire"},
	} {
		raw, err := c.Call(ctx, op, body)
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		a := decodeAccount(t, raw)
		if a.Account != chain.AccountID().String() || a.Length != 2 || a.Username != "cheshire" {
			t.Fatalf("%s: %+v", op, a)
		}
	}
	_, err = c.Call(ctx, keyregistry.OpUsername, keyregistry.UsernameQuery{Username: "nobody.here"})
	if !errors.As(err, &we) || we.Code != wire.Code(keyregistry.CodeNotFound) {
		t.Fatalf("unknown username: %v", err)
	}

	// The public HTTP routes of another node answer from the grid.
	for path, want := range map[string]int{
		"/v1/accounts/" + chain.AccountID().String(): http.StatusOK,
		"/v1/devices/" + dev.ID().String():           http.StatusOK,
		"/v1/usernames/cheshire":                     http.StatusOK,
		"/v1/usernames/nobody.here":                  http.StatusNotFound,
		"/v1/accounts/zz":                            http.StatusBadRequest,
	} {
		resp, err := http.Get(g.nodes[1].GatewayURL() + path)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s: %d %v, want %d", path, resp.StatusCode, body, want)
		}
		if want == http.StatusOK && body["account"] != chain.AccountID().String() {
			t.Fatalf("GET %s: %v", path, body)
		}
	}
}

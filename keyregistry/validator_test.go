package keyregistry

import (
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/iagon/gridchat/e2ee"
)

// chains builds one account's chain at three lengths, a fork of its second
// version, and another account.
func testChains(t *testing.T) (v1, v2, v3, fork, other []byte, id e2ee.AccountID, dev e2ee.DeviceID) {
	t.Helper()
	now := time.Now()
	d, _ := e2ee.NewDeviceKeys(now)
	c, _ := e2ee.NewAccount(d, now)
	cd := newCodec()
	enc := func(c *e2ee.Chain) []byte {
		b, err := cd.marshal(&Record{Chain: c.Encode()})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	v1 = enc(c)
	if _, err := c.Append(d, &e2ee.SetUsername{Username: "alice"}, now); err != nil {
		t.Fatal(err)
	}
	v2 = enc(c)
	f, _ := e2ee.DecodeChain(c.Encode())
	if _, err := c.Append(d, &e2ee.SetProfile{Profile: e2ee.Profile{Name: "A"}}, now); err != nil {
		t.Fatal(err)
	}
	v3 = enc(c)
	if _, err := f.Append(d, &e2ee.SetProfile{Profile: e2ee.Profile{Name: "B"}}, now); err != nil {
		t.Fatal(err)
	}
	fork = enc(f)
	d2, _ := e2ee.NewDeviceKeys(now)
	o, _ := e2ee.NewAccount(d2, now)
	if _, err := o.Append(d2, &e2ee.SetUsername{Username: "alice"}, now); err != nil {
		t.Fatal(err)
	}
	other = enc(o)
	return v1, v2, v3, fork, other, c.AccountID(), d.ID()
}

func TestSelectorPrefersExtensionsAndRefusesForksAndOtherAccountsUnderOneID(t *testing.T) {
	v1, v2, v3, fork, other, id, dev := testChains(t)
	vals := Validators(ValidatorConfig{})
	acct, name, device := vals[NSAccount], vals[NSUsername], vals[NSDevice]
	ak, nk, dk := AccountKey(id), UsernameKey("alice"), DeviceKey(dev)

	tests := []struct {
		name string
		key  string
		v    interface {
			Select(string, [][]byte) (int, error)
		}
		values  [][]byte
		want    int
		wantErr error
	}{
		{"longer wins first", ak, acct, [][]byte{v3, v1}, 0, nil},
		{"longer wins second", ak, acct, [][]byte{v1, v2}, 1, nil},
		{"longest of three", ak, acct, [][]byte{v2, v3, v1}, 1, nil},
		{"same chain keeps first", ak, acct, [][]byte{v2, v2}, 0, nil},
		{"invalid loses", ak, acct, [][]byte{[]byte("junk"), v1}, 1, nil},
		{"fork refused", ak, acct, [][]byte{v3, fork}, 0, ErrFork},
		{"device index: longer wins", dk, device, [][]byte{v1, v3}, 1, nil},
		{"name: extension of the holder wins", nk, name, [][]byte{v2, v3}, 1, nil},
		{"record of another account under the key", ak, acct, [][]byte{other}, 0, ErrAccountMismatch},
	}
	for _, tt := range tests {
		got, err := tt.v.Select(tt.key, tt.values)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("%s: got %d, %v; want %v", tt.name, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s: got %d, %v; want %d", tt.name, got, err, tt.want)
		}
	}
}

func TestValidatorsCheckTheKey(t *testing.T) {
	v1, v2, _, _, _, id, dev := testChains(t)
	vals := Validators(ValidatorConfig{})
	if err := vals[NSAccount].Validate(AccountKey(id), v1); err != nil {
		t.Fatal(err)
	}
	upper := "/" + NSAccount + "/" + stringsToUpper(id.String())
	for name, tc := range map[string]struct {
		ns, key string
		val     []byte
		want    error
	}{
		"uppercase hex key":      {NSAccount, upper, v1, ErrMalformed},
		"other account's key":    {NSAccount, AccountKey(e2ee.AccountID{1}), v1, ErrAccountMismatch},
		"device not in chain":    {NSDevice, DeviceKey(e2ee.DeviceID{1}), v1, ErrAccountMismatch},
		"name not claimed":       {NSUsername, UsernameKey("alice"), v1, ErrAccountMismatch},
		"name not normalized":    {NSUsername, "/" + NSUsername + "/Alice", v2, ErrUsernameInvalid},
		"other name":             {NSUsername, UsernameKey("bob"), v2, ErrAccountMismatch},
		"wrong namespace in key": {NSDevice, DeviceKey(dev)[:2] + "x", v1, ErrMalformed},
	} {
		if err := vals[tc.ns].Validate(tc.key, tc.val); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
	}
}

func stringsToUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func TestProtocolPrefixDerivesTheDirectoryTopics(t *testing.T) {
	for _, tc := range []struct{ prefix, topic, keys string }{
		{"", "/gridchat/directory/1", "/gridchat/directory-keys/1"},
		{"/gridchat", "/gridchat/directory/1", "/gridchat/directory-keys/1"},
		{"/mygrid", "/mygrid/directory/1", "/mygrid/directory-keys/1"},
	} {
		if got := TopicFor(protocol.ID(tc.prefix)); got != tc.topic {
			t.Errorf("TopicFor(%q) = %q, want %q", tc.prefix, got, tc.topic)
		}
		if got := KeyTopicFor(protocol.ID(tc.prefix)); got != tc.keys {
			t.Errorf("KeyTopicFor(%q) = %q, want %q", tc.prefix, got, tc.keys)
		}
	}
}

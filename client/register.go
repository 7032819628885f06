package client

import (
	"context"
	"fmt"
	"strings"

	"github.com/iagon/gridchat/e2ee"
)

// Directory operations on the gateway WebSocket (docs/PROTOCOL.md §7).
const (
	opDirNonce    = "directory.nonce"
	opDirRegister = "directory.register"
	opDirAppend   = "directory.append"
)

type nonceRequest struct {
	Device []byte `json:"device"` // e2ee DevicePublic encoding: the gateway seals a key challenge to it
}

type nonceResponse struct {
	Nonce     []byte `json:"nonce"`
	Challenge []byte `json:"challenge,omitempty"`
}

type registerRequest struct {
	Nonce  []byte `json:"nonce"`
	Chain  []byte `json:"chain"`
	Proof  []byte `json:"proof"`
	Answer []byte `json:"answer"`
}

type appendRequest struct {
	Chain []byte `json:"chain"`
}

// Register creates a new account whose first device is this one, claims username (if not empty) and opens
// the client. It connects to the first gateway that answers, proves possession of both device keys over the
// gateway's single-use nonce, and has the gateway publish the account.
func Register(ctx context.Context, cfg Config, username string) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	name := strings.ToLower(strings.TrimSpace(username))
	if name != "" && !e2ee.ValidUsername(name) {
		return nil, fmt.Errorf("client: %q is not a valid username (1 to 64 of a-z, 0-9, '.', '_', '-')", username)
	}
	if len(cfg.Gateways) == 0 {
		return nil, fmt.Errorf("client: register: no gateway configured")
	}
	st, err := openStore(cfg)
	if err != nil {
		return nil, err
	}
	_, exists := st.Get(bucketSelf, keyDevice)
	st.Close()
	if exists {
		return nil, ErrExists
	}
	var lastErr error
	clock := newGridClock(cfg.Now, 0)
	for _, url := range cfg.Gateways {
		dev, chain, err := registerAt(ctx, cfg, url, name, clock)
		if err != nil {
			lastErr = err
			if ctx.Err() != nil {
				break
			}
			continue
		}
		return create(cfg, dev, chain, clock.Offset())
	}
	return nil, fmt.Errorf("client: register: %w", lastErr)
}

// registerAt makes the device and its account at the time of the gateway at url (its hello corrects clock,
// clock.go) and registers them there.
func registerAt(ctx context.Context, cfg Config, url, name string, clock *gridClock) (*e2ee.DeviceKeys, *e2ee.Chain, error) {
	cctx, cancel := context.WithTimeout(ctx, cfg.CallTimeout)
	defer cancel()
	cn, err := dialConn(cctx, url, cfg.HTTPClient, cfg.Logger)
	if err != nil {
		return nil, nil, err
	}
	defer cn.close()
	if _, err := clock.observe(cn); err != nil {
		return nil, nil, err
	}
	now := clock.now()
	dev, err := e2ee.NewDeviceKeys(now)
	if err != nil {
		return nil, nil, err
	}
	// The directory registers the genesis statement alone; the username follows as an append.
	genesis, err := e2ee.NewAccount(dev, now)
	if err != nil {
		return nil, nil, err
	}
	chain, err := e2ee.DecodeChain(genesis.Encode())
	if err != nil {
		return nil, nil, err
	}
	if name != "" {
		if _, err := chain.Append(dev, &e2ee.SetUsername{Username: name}, now); err != nil {
			return nil, nil, err
		}
	}
	var grant nonceResponse
	if err := cn.call(cctx, opDirNonce, nonceRequest{Device: dev.Public().Encode()}, &grant); err != nil {
		return nil, nil, err
	}
	proof, err := e2ee.SignRegistration(dev, cn.hello.GatewayID, grant.Nonce, clock.now())
	if err != nil {
		return nil, nil, err
	}
	req := registerRequest{Nonce: grant.Nonce, Chain: genesis.Encode(), Proof: proof.Encode()}
	if len(grant.Challenge) > 0 {
		if req.Answer, err = dev.AnswerKeyChallenge(cn.hello.GatewayID, grant.Nonce, grant.Challenge); err != nil {
			return nil, nil, err
		}
	}
	if err := cn.call(cctx, opDirRegister, req, nil); err != nil {
		return nil, nil, err
	}
	if chain.Len() > genesis.Len() {
		if err := cn.call(cctx, opDirAppend, appendRequest{Chain: chain.Encode()}, nil); err != nil {
			return nil, nil, fmt.Errorf("claim username: %w", err)
		}
	}
	return dev, chain, nil
}

// publishChain hands an extended chain of this account to the directory.
func (c *Client) publishChain(ctx context.Context, chain *e2ee.Chain) error {
	if err := c.call(ctx, opDirAppend, appendRequest{Chain: chain.Encode()}, nil); err != nil {
		return fmt.Errorf("client: publish account chain: %w", err)
	}
	return nil
}

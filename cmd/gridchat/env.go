package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/iagon/gridchat/client"
	"github.com/iagon/gridchat/client/store"
	"github.com/iagon/gridchat/e2ee"
)

// env resolves the state directory and opens the client for a command.
type env struct {
	home *string
}

// usageError marks errors in how the command was called (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// settings is home/config.json.
type settings struct {
	Gateways []string `json:"gateways"`
}

func (e *env) dir() (string, error) {
	if *e.home != "" {
		return *e.home, nil
	}
	if h := os.Getenv("GRIDCHAT_HOME"); h != "" {
		return h, nil
	}
	h, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no --home given and no home directory: %w", err)
	}
	return filepath.Join(h, ".gridchat"), nil
}

func (e *env) settings() (settings, error) {
	var s settings
	dir, err := e.dir()
	if err != nil {
		return s, err
	}
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%s: %w", filepath.Join(dir, "config.json"), err)
	}
	return s, nil
}

func (e *env) saveSettings(s settings) error {
	dir, err := e.dir()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(s, "", "  ")
	return os.WriteFile(filepath.Join(dir, "config.json"), append(b, '\n'), 0o600)
}

// storeKey reads home/store.key, creating it when create is set.
func (e *env) storeKey(create bool) ([]byte, error) {
	dir, err := e.dir()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "store.key")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && create {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		k := make([]byte, store.KeySize)
		rand.Read(k)
		if err := os.WriteFile(path, []byte(hex.EncodeToString(k)+"\n"), 0o600); err != nil {
			return nil, err
		}
		return k, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no gridchat device in %s; run \"gridchat init --node URL --username NAME\" or \"gridchat link\" first", dir)
	}
	if err != nil {
		return nil, err
	}
	k, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) != store.KeySize {
		return nil, fmt.Errorf("%s is damaged: want %d hex-encoded bytes", path, store.KeySize)
	}
	return k, nil
}

// config builds the client configuration; nodes override the saved gateways.
func (e *env) config(nodes []string, createKey bool) (client.Config, error) {
	dir, err := e.dir()
	if err != nil {
		return client.Config{}, err
	}
	key, err := e.storeKey(createKey)
	if err != nil {
		return client.Config{}, err
	}
	s, err := e.settings()
	if err != nil {
		return client.Config{}, err
	}
	gws := nodes
	if len(gws) == 0 {
		gws = s.Gateways
	}
	level := slog.LevelWarn
	if os.Getenv("GRIDCHAT_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return client.Config{
		Dir: filepath.Join(dir, "state"), StoreKey: key, Gateways: gws,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	}, nil
}

// open opens the device and waits for a gateway connection.
func (e *env) open(ctx context.Context) (*client.Client, error) {
	cfg, err := e.config(nil, false)
	if err != nil {
		return nil, err
	}
	if len(cfg.Gateways) == 0 {
		return nil, errors.New("no gateway configured; run \"gridchat init --node URL\" again or pass --home")
	}
	c, err := client.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.WaitConnected(wctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("cannot reach any of %s: %w", strings.Join(cfg.Gateways, ", "), err)
	}
	return c, nil
}

// conversation finds the conversation a user means: a group by name or ID prefix (with --group), or the
// direct conversation with a username.
func conversation(ctx context.Context, c *client.Client, who string, group bool) (client.Conversation, error) {
	if !group {
		return c.StartDirect(ctx, who)
	}
	var found []client.Conversation
	for _, cv := range c.Conversations() {
		if cv.Kind != client.Group {
			continue
		}
		if (cv.Group != nil && cv.Group.Name == who) || strings.HasPrefix(cv.ID.String(), strings.ToLower(who)) {
			found = append(found, cv)
		}
	}
	switch len(found) {
	case 0:
		return client.Conversation{}, fmt.Errorf("no group named %q (see \"gridchat group list\")", who)
	case 1:
		return found[0], nil
	}
	return client.Conversation{}, fmt.Errorf("%d groups match %q; use more of the group ID", len(found), who)
}

// names maps accounts to contact names for display.
func names(c *client.Client) map[e2ee.AccountID]string {
	m := map[e2ee.AccountID]string{c.Account(): "me"}
	for _, ct := range c.Contacts() {
		m[ct.Account] = ct.Username
	}
	return m
}

func displayName(m map[e2ee.AccountID]string, a e2ee.AccountID) string {
	if n, ok := m[a]; ok {
		return n
	}
	return a.String()[:12]
}

// friendly rewrites errors a user can act on.
func friendly(err error) string {
	switch {
	case errors.Is(err, client.ErrNotFound):
		return err.Error() + " (check the spelling; the user must have run \"gridchat init\")"
	case errors.Is(err, client.ErrExists):
		return "this home already holds a device; use another --home"
	case errors.Is(err, store.ErrWrongKey):
		return "the store key does not open the state (home/store.key was replaced?)"
	case errors.Is(err, client.ErrKeyUnavailable):
		return err.Error() + " (the other device must come online once before the first message)"
	}
	return err.Error()
}

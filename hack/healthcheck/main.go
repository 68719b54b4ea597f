// Command healthcheck tells how GitOps tools see forgeops objects: for each object (JSON, one per
// line on stdin) it prints the status the real kstatus library computes
// (sigs.k8s.io/cli-utils/pkg/kstatus/status, what Flux and `kubectl wait`-style tooling use) and the
// health Argo CD computes with the shipped Lua health check (run by gopher-lua, the interpreter
// Argo CD embeds, with the same `obj` global and `hs` result table).
//
//	healthcheck -lua deploy/argocd/health.lua < objects.jsonl
//
// Output, one JSON line per object: {"kind","name","kstatus","kstatusMessage","argo","argoMessage"}.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Kind           string `json:"kind"`
	Name           string `json:"name"`
	KStatus        string `json:"kstatus"`
	KStatusMessage string `json:"kstatusMessage"`
	Argo           string `json:"argo"`
	ArgoMessage    string `json:"argoMessage"`
}

func main() {
	script := flag.String("lua", "", "the Argo CD health check (Lua)")
	flag.Parse()
	source, err := os.ReadFile(*script)
	if err != nil {
		fail("reading the Lua health check: %v", err)
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		if len(in.Bytes()) == 0 {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(in.Bytes()); err != nil {
			fail("an object is not a Kubernetes object in JSON: %v", err)
		}
		obj := u.Object
		r := result{Kind: u.GetKind(), Name: u.GetNamespace() + "/" + u.GetName()}
		computed, err := status.Compute(u)
		if err != nil {
			fail("kstatus: %v", err)
		}
		r.KStatus, r.KStatusMessage = computed.Status.String(), computed.Message
		r.Argo, r.ArgoMessage, err = argoHealth(string(source), obj)
		if err != nil {
			fail("the Lua health check failed on %s: %v", r.Name, err)
		}
		if err := out.Encode(r); err != nil {
			fail("writing: %v", err)
		}
	}
	if err := in.Err(); err != nil {
		fail("reading stdin: %v", err)
	}
}

// argoHealth runs a health check as Argo CD does: the object as the global `obj`, only the safe
// standard libraries open, and the returned table's `status` and `message`.
func argoHealth(script string, obj map[string]interface{}) (string, string, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		l.Push(l.NewFunction(lib.open))
		l.Push(lua.LString(lib.name))
		l.Call(1, 0)
	}
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return "", "", err
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("the script returned %s, not a table", l.Get(-1).Type())
	}
	return lua.LVAsString(ret.RawGetString("status")), lua.LVAsString(ret.RawGetString("message")), nil
}

func toLua(l *lua.LState, v interface{}) lua.LValue {
	switch v := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []interface{}:
		t := l.NewTable()
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]interface{}:
		t := l.NewTable()
		for k, item := range v {
			t.RawSetString(k, toLua(l, item))
		}
		return t
	default:
		return lua.LString(fmt.Sprint(v))
	}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "healthcheck: "+format+"\n", args...)
	os.Exit(1)
}

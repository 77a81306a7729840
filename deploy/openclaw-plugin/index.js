// openclaw-guard's OpenClaw plugin: before each tool call it tells the guard which
// session, run and tool call is about to act, waits for the guard's tag, and puts the
// tag into an exec call's environment (OCG_TOOL_CALL). The guard reads the tag from
// the shell the gateway starts and stamps that process tree's events with the call.
// The guard trusts only the gateway process on this socket; the plugin never blocks a
// call: with no guard listening the call runs untagged (and the guard, if it runs
// later, marks its processes unattributed).
import net from "node:net";

const DEFAULT_SOCKET = "/run/openclaw-guard/attribution.sock";
// What the guard accepts per report; longer text is cut here, not refused there.
const TEXT_MAX = 4096;

function cut(s) {
  if (typeof s !== "string") return undefined;
  return s.length > TEXT_MAX ? s.slice(0, TEXT_MAX) : s;
}

// The part of a tool's parameters a responder needs: the command, path or URL.
function summary(toolName, params) {
  if (!params || typeof params !== "object") return {};
  const out = {};
  for (const k of ["command", "path", "file_path", "url", "workdir"]) {
    if (typeof params[k] === "string") out[k] = cut(params[k]);
  }
  if (typeof params.pty === "boolean") out.pty = params.pty;
  return out;
}

// One request, one reply line; resolves to the parsed reply or null (no guard, slow
// guard, refusal): attribution must never stop the agent.
function ask(socket, message, timeoutMs) {
  return new Promise((resolve) => {
    let done = false;
    let buf = "";
    const finish = (v) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      conn.destroy();
      resolve(v);
    };
    const conn = net.createConnection(socket);
    const timer = setTimeout(() => finish(null), timeoutMs);
    conn.setEncoding("utf8");
    conn.on("connect", () => conn.write(JSON.stringify(message) + "\n"));
    conn.on("data", (d) => {
      buf += d;
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      try {
        finish(JSON.parse(buf.slice(0, nl)));
      } catch {
        finish(null);
      }
    });
    conn.on("error", () => finish(null));
    conn.on("close", () => finish(null));
  });
}

export default {
  id: "openclaw-guard",
  name: "openclaw-guard attribution",
  register(api) {
    const config = api.pluginConfig ?? {};
    const socket = config.socket || process.env.OPENCLAW_GUARD_SOCKET || DEFAULT_SOCKET;
    const timeoutMs = config.timeoutMs || 1500;
    api.on(
      "before_tool_call",
      async (event, ctx) => {
        const toolCallId = event.toolCallId ?? ctx?.toolCallId;
        const reply = await ask(
          socket,
          {
            v: 1,
            type: "start",
            toolCallId,
            runId: event.runId ?? ctx?.runId,
            sessionKey: ctx?.sessionKey,
            sessionId: ctx?.sessionId,
            agentId: ctx?.agentId,
            toolName: event.toolName,
            params: summary(event.toolName, event.params),
          },
          timeoutMs,
        );
        const tag = reply && typeof reply.tag === "string" ? reply.tag : undefined;
        if (!tag || event.toolName !== "exec" || !event.params || typeof event.params !== "object") {
          return undefined;
        }
        const env = { ...(event.params.env ?? {}), OCG_TOOL_CALL: tag };
        return { params: { ...event.params, env } };
      },
      { timeoutMs: timeoutMs + 500 },
    );
    api.on("after_tool_call", async (event, ctx) => {
      await ask(
        socket,
        {
          v: 1,
          type: "end",
          toolCallId: event.toolCallId ?? ctx?.toolCallId,
          runId: event.runId ?? ctx?.runId,
          toolName: event.toolName,
          durationMs: typeof event.durationMs === "number" ? event.durationMs : undefined,
          error: typeof event.error === "string" ? cut(event.error) : undefined,
        },
        timeoutMs,
      );
    });
  },
};

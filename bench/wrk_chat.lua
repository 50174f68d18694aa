-- wrk script: POST a chat completion body to /v1/chat/completions.
-- Set WRK_STREAM=1 to ask for a 50-chunk SSE stream (with include_usage).
-- Usage: wrk -t1 -c64 -d5s -s bench/wrk_chat.lua http://127.0.0.1:PORT
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
if os.getenv("WRK_STREAM") == "1" then
  wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}],'
    .. '"stream":true,"stream_options":{"include_usage":true}}'
else
  wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}'
end

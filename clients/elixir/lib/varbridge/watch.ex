defmodule VarBridge.Watch do
  @moduledoc false
  # One watch: a GenServer that reads the server's Server-Sent Events stream
  # of a session (GET /v1/sessions/{session}/watch) and calls the watch's
  # callback once per update, in order, from this process.
  #
  # Resume bookkeeping, as the Go client keeps it: an event whose SSE id is
  # set ("<incarnation>:<revision>") completes that revision, and heartbeats
  # report the revision the stream has covered. After a cut the watch
  # reconnects with Last-Event-ID set to the last complete point, so the
  # server sends every change after it; updates of a revision that was cut
  # in the middle come again, and the ones already delivered (by variable id)
  # are skipped. A RESYNC starts a new history: the bookkeeping starts over.
  #
  # The stream is read from its own socket in {active, once} mode (see
  # VarBridge.HTTPStream for why not :httpc): the next bytes are read only
  # once the previous ones were handled, so a slow callback holds the TCP
  # window closed instead of growing a buffer here.

  use GenServer, restart: :temporary
  require Logger

  alias VarBridge.{Error, HTTPStream, JSON, SSE, Value, Variable}

  @retryable [:unavailable, :internal, :unknown, :aborted, :canceled, :deadline_exceeded]
  @jitter 0.1
  @connect_timeout 5_000

  def start_link(args), do: GenServer.start_link(__MODULE__, args)

  # Waits until the server accepted the stream (:ok) or refused it.
  def await_started(pid) do
    GenServer.call(pid, :await_started, :infinity)
  catch
    :exit, reason -> {:error, Error.local(:internal, nil, "watch stopped: #{inspect(reason)}")}
  end

  def info(pid) do
    GenServer.call(pid, :info, 5_000)
  catch
    :exit, _ -> nil
  end

  @impl true
  def init(%{session: s, identifiers: idents, callback: cb, opts: opts, ref: ref}) do
    Process.flag(:trap_exit, true)
    {:ok, _} = Registry.register(VarBridge.Watches, ref, nil)

    owner =
      case Keyword.get(opts, :owner) do
        pid when is_pid(pid) -> Process.monitor(pid)
        nil -> nil
      end

    {base, max} = Keyword.get(opts, :backoff, {1_000, 30_000})

    state = %{
      session: s,
      ref: ref,
      # What the caller passed, by its string form: the callback gets it back.
      identifiers: idents,
      originals: Map.new(idents, &{to_string(&1), &1}),
      callback: cb,
      include_initial: Keyword.get(opts, :include_initial, false),
      filter: Keyword.get(opts, :filter),
      on_error: Keyword.get(opts, :on_error),
      backoff_base: base,
      backoff_max: max,
      max_failures: Keyword.get(opts, :max_failures, 10),
      heartbeat: Keyword.get(opts, :heartbeat),
      idle_timeout: Keyword.get(opts, :idle_timeout, 4 * Keyword.get(opts, :heartbeat, 5_000)),
      owner: owner,
      # The connection: its socket, transport module, response reader,
      # status (nil until the head came) and error body.
      sock: nil,
      transport: nil,
      http: nil,
      status: nil,
      err_body: "",
      parser: SSE.new(),
      idle_timer: nil,
      # This connection starts from now: no resume point, no initial values.
      fresh: false,
      # Resume point: the last complete revision of this incarnation.
      incarnation: nil,
      last_rev: nil,
      # Updates delivered from a revision not complete yet, by variable id.
      partial_rev: nil,
      partial_ids: MapSet.new(),
      failures: 0,
      got_event: false,
      awaiting: nil,
      started: false,
      start_error: nil,
      stats: %{
        updates_received: 0,
        errors: 0,
        reconnects: 0,
        resent_skipped: 0,
        started_at: System.monotonic_time(:millisecond)
      }
    }

    {:ok, state, {:continue, :connect}}
  end

  @impl true
  def handle_continue(:connect, state), do: open(state)

  @impl true
  def handle_call(:await_started, _from, %{start_error: %Error{} = e} = state),
    do: {:stop, :normal, {:error, e}, state}

  def handle_call(:await_started, from, %{started: false} = state),
    do: {:noreply, %{state | awaiting: from}}

  def handle_call(:await_started, _from, state), do: {:reply, :ok, state}

  def handle_call(:info, _from, state) do
    info = %{
      ref: state.ref,
      pid: self(),
      session_id: state.session.id,
      identifiers: state.identifiers,
      alive: true,
      streaming: state.status == 200,
      updates_received: state.stats.updates_received,
      errors: state.stats.errors,
      reconnects: state.stats.reconnects,
      resent_skipped: state.stats.resent_skipped,
      last_revision: state.last_rev,
      uptime_ms: System.monotonic_time(:millisecond) - state.stats.started_at
    }

    {:reply, info, state}
  end

  @impl true
  def handle_info({tag, sock, bytes}, %{sock: sock} = state) when tag in [:tcp, :ssl] do
    {items, http} = HTTPStream.feed(state.http, bytes)
    response(items, %{state | http: http})
  end

  def handle_info({tag, sock}, %{sock: sock} = state) when tag in [:tcp_closed, :ssl_closed] do
    response(HTTPStream.closed(state.http), state)
  end

  def handle_info({tag, sock, reason}, %{sock: sock} = state)
      when tag in [:tcp_error, :ssl_error] do
    broken(close(state), Error.transport(reason))
  end

  # Messages of a connection given up on.
  def handle_info({tag, _, _}, state) when tag in [:tcp, :ssl, :tcp_error, :ssl_error],
    do: {:noreply, state}

  def handle_info({tag, _}, state) when tag in [:tcp_closed, :ssl_closed], do: {:noreply, state}

  def handle_info({:idle, sock}, %{sock: sock} = state) when sock != nil do
    broken(close(state), Error.local(:unavailable, nil, "no data for #{state.idle_timeout} ms"))
  end

  def handle_info({:idle, _}, state), do: {:noreply, state}

  def handle_info(:reconnect, state) do
    open(%{state | stats: %{state.stats | reconnects: state.stats.reconnects + 1}})
  end

  def handle_info({:DOWN, owner, :process, _, _}, %{owner: owner} = state),
    do: {:stop, :normal, state}

  def handle_info({:EXIT, _, _}, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state) do
    close(state)
    :ok
  end

  # --- the connection ----------------------------------------------------

  defp open(state) do
    s = state.session
    uri = URI.parse(s.url)
    query = Enum.map(state.identifiers, &{"var", to_string(&1)})

    # Initial values are asked for until a revision was complete: after
    # that, the resume point covers them.
    initial = state.include_initial and state.last_rev == nil

    query =
      query ++
        if(state.filter, do: [{"where", state.filter}], else: []) ++
        if(state.heartbeat, do: [{"heartbeat", "#{state.heartbeat}ms"}], else: []) ++
        if(initial, do: [{"initial", "true"}], else: [])

    path =
      "#{String.trim_trailing(uri.path || "", "/")}/v1/sessions/" <>
        "#{URI.encode(s.id, &URI.char_unreserved?/1)}/watch?#{URI.encode_query(query)}"

    headers =
      [
        {"host", "#{uri.host}:#{uri.port}"},
        {"accept", "text/event-stream"},
        {"cache-control", "no-store"}
      ] ++
        if(s.token in [nil, ""], do: [], else: [{"authorization", "Bearer " <> s.token}]) ++
        case resume_id(state) do
          nil -> []
          id -> [{"last-event-id", id}]
        end

    request = [
      "GET ",
      path,
      " HTTP/1.1\r\n",
      Enum.map(headers, fn {k, v} -> [k, ": ", v, "\r\n"] end),
      "\r\n"
    ]

    {transport, opts} = transport(uri, s.tls)
    base = [:binary, active: false, packet: :raw, nodelay: true]

    with {:ok, sock} <-
           transport.connect(to_charlist(uri.host), uri.port, base ++ opts, @connect_timeout),
         :ok <- transport.send(sock, request),
         :ok <- setopts(transport, sock) do
      state = %{
        state
        | sock: sock,
          transport: transport,
          http: HTTPStream.new(),
          status: nil,
          err_body: "",
          parser: SSE.new(),
          fresh: resume_id(state) == nil and not initial
      }

      {:noreply, arm_idle(state)}
    else
      {:error, reason} -> broken(state, Error.transport(reason))
    end
  end

  defp transport(%URI{scheme: "https"}, tls), do: {:ssl, tls}
  defp transport(_, _), do: {:gen_tcp, []}

  defp setopts(:gen_tcp, sock), do: :inet.setopts(sock, active: :once)
  defp setopts(:ssl, sock), do: :ssl.setopts(sock, active: :once)

  # What the bytes of the response completed.
  defp response([], state) do
    case setopts(state.transport, state.sock) do
      :ok -> {:noreply, arm_idle(state)}
      {:error, reason} -> broken(close(state), Error.transport(reason))
    end
  end

  defp response([{:head, status, headers} | rest], state) do
    state = %{state | status: status}

    state =
      if status == 200 do
        state
        |> note_incarnation(HTTPStream.header(headers, "varbridge-watch-incarnation"))
        |> started(:ok)
      else
        state
      end

    response(rest, state)
  end

  defp response([{:data, bytes} | rest], %{status: 200} = state) do
    {events, parser} = SSE.feed(state.parser, bytes)

    case handle_events(events, %{state | parser: parser}) do
      {:ok, state} -> response(rest, state)
      {:error, %Error{} = e, state} -> broken(close(state), e)
    end
  end

  defp response([{:data, bytes} | rest], state) do
    # An error body is small; past 64 KiB it is not one.
    if byte_size(state.err_body) > 65_536,
      do:
        broken(close(state), Error.local(:unknown, nil, "HTTP #{state.status}: a body too large")),
      else: response(rest, %{state | err_body: state.err_body <> bytes})
  end

  defp response([:done | _], %{status: 200} = state) do
    broken(close(state), Error.local(:unavailable, nil, "the server ended the watch stream"))
  end

  # A refusal before the stream began: a Connect error object in the body.
  defp response([:done | _], state),
    do: broken(close(state), Error.from_connect(state.status, state.err_body))

  defp response([{:error, reason} | _], state), do: broken(close(state), Error.transport(reason))

  defp resume_id(%{incarnation: inc, last_rev: rev}) when is_binary(inc) and is_integer(rev),
    do: "#{inc}:#{rev}"

  defp resume_id(_), do: nil

  defp close(%{sock: nil} = state), do: state

  defp close(state) do
    state.transport.close(state.sock)
    %{state | sock: nil, status: nil}
  end

  defp arm_idle(state) do
    if state.idle_timer, do: Process.cancel_timer(state.idle_timer)
    %{state | idle_timer: Process.send_after(self(), {:idle, state.sock}, state.idle_timeout)}
  end

  # The stream broke or was refused: try again later, or end the watch.
  defp broken(state, %Error{} = e) do
    failures = if state.got_event, do: 1, else: state.failures + 1
    state = %{state | failures: failures, got_event: false}

    cond do
      # The first connection's failure is the caller's answer, as on gRPC:
      # watch_variables returns once the server registered the watch, or
      # says why it did not.
      not state.started and state.awaiting != nil ->
        {:stop, :normal, started(state, {:error, e})}

      # Failed before watch_variables asked: keep the answer for it.
      not state.started ->
        {:noreply, %{state | start_error: e}}

      not retryable?(e) ->
        give_up(state, e)

      failures > state.max_failures ->
        give_up(state, %{
          e
          | message: "gave up after #{state.max_failures} failed reconnects: " <> e.message
        })

      true ->
        Process.send_after(
          self(),
          :reconnect,
          backoff(state.backoff_base, state.backoff_max, failures)
        )

        {:noreply, state}
    end
  end

  defp give_up(state, e) do
    Logger.warning(
      "varbridge watch #{inspect(state.identifiers)} on #{state.session.id} ended: #{Exception.message(e)}"
    )

    if state.on_error, do: safely(fn -> state.on_error.(e) end)
    {:stop, :normal, started(state, {:error, e})}
  end

  defp started(%{started: true} = state, _), do: state

  defp started(state, reply) do
    if state.awaiting, do: GenServer.reply(state.awaiting, reply)
    %{state | started: reply == :ok, awaiting: nil}
  end

  defp retryable?(%Error{code: code}), do: code in @retryable

  # The delay before reconnect number `failures` (1 for the first after a
  # break): the first waits a random fraction of the jitter of base, so one
  # break comes back at once while many spread out; each further failure
  # doubles it up to max, +-10%.
  defp backoff(base, _max, failures) when failures <= 1,
    do: round(base * @jitter * :rand.uniform())

  defp backoff(base, max, failures) do
    d = min(base * Integer.pow(2, min(failures - 2, 30)), max)
    round(d + d * @jitter * (2 * :rand.uniform() - 1))
  end

  # --- events --------------------------------------------------------------

  defp handle_events([], state), do: {:ok, state}

  defp handle_events([ev | rest], state) do
    state = %{state | got_event: true}

    case handle_event(ev, state) do
      {:ok, state} -> handle_events(rest, complete(state, ev.id))
      {:error, _, _} = err -> err
    end
  end

  # The watch is registered: every write after this revision reaches it. On
  # a fresh watch without initial values, that is the resume point; one
  # that resumed, or waits for initial values, keeps its own.
  defp handle_event(%{event: "watching", data: data}, state) do
    case JSON.decode(data) do
      {:ok, %{"revision" => rev} = w} when is_integer(rev) ->
        state = note_incarnation(state, w["incarnation"])

        if state.fresh and is_binary(state.incarnation),
          do: {:ok, covered(state, rev)},
          else: {:ok, state}

      _ ->
        {:ok, state}
    end
  end

  defp handle_event(%{event: "heartbeat", data: data}, state) do
    case JSON.decode(data) do
      {:ok, %{} = hb} ->
        state = note_incarnation(state, hb["incarnation"])

        case hb["revision"] do
          rev when is_integer(rev) and is_binary(state.incarnation) -> {:ok, covered(state, rev)}
          _ -> {:ok, state}
        end

      _ ->
        {:ok, state}
    end
  end

  defp handle_event(%{event: "error", data: data}, state) do
    e =
      case JSON.decode(data) do
        {:ok, %{"code" => code} = m} -> Error.from_map(code, m)
        _ -> Error.local(:unknown, nil, data)
      end

    {:error, e, state}
  end

  defp handle_event(%{data: data}, state) do
    case JSON.decode(data) do
      {:ok, %{"update" => _} = u} -> {:ok, update(u, state)}
      _ -> {:ok, state}
    end
  end

  # An id completes a revision: the resume point moves past it.
  defp complete(state, nil), do: state

  # The id is "<incarnation>:<revision>", split at its last colon as the
  # server reads it back.
  defp complete(state, id) do
    case Regex.run(~r/\A(.*):(\d+)\z/s, id) do
      [_, inc, rev] -> state |> note_incarnation(inc) |> covered(String.to_integer(rev))
      nil -> state
    end
  end

  defp covered(state, rev) do
    state =
      if state.last_rev == nil or rev > state.last_rev, do: %{state | last_rev: rev}, else: state

    if state.partial_rev != nil and state.partial_rev <= rev,
      do: %{state | partial_rev: nil, partial_ids: MapSet.new()},
      else: state
  end

  # The stream names its incarnation; another one than the resume point's
  # means a new history, which the server starts with RESYNC.
  defp note_incarnation(state, nil), do: state
  defp note_incarnation(%{incarnation: nil} = state, inc), do: %{state | incarnation: inc}
  defp note_incarnation(%{incarnation: inc} = state, inc), do: state

  defp note_incarnation(state, inc),
    do: %{state | incarnation: inc, last_rev: nil, partial_rev: nil, partial_ids: MapSet.new()}

  defp update(u, state) do
    rev = u["revision"]
    id = u["id"]
    kind = u["update"]

    state =
      if kind == "resync",
        do: %{
          state
          | last_rev: nil,
            partial_rev: rev,
            partial_ids: if(state.partial_rev == rev, do: state.partial_ids, else: MapSet.new())
        },
        else: state

    cond do
      kind != "resync" and state.last_rev != nil and rev <= state.last_rev ->
        state

      rev == state.partial_rev and MapSet.member?(state.partial_ids, id) ->
        %{state | stats: %{state.stats | resent_skipped: state.stats.resent_skipped + 1}}

      true ->
        state = deliver(u, kind, state)
        ids = if rev == state.partial_rev, do: state.partial_ids, else: MapSet.new()
        %{state | partial_rev: rev, partial_ids: MapSet.put(ids, id)}
    end
  end

  defp deliver(u, kind, state) do
    type = Value.type_from_name(u["type"])
    name = Map.get(u, "name", "")

    ident =
      Map.get(state.originals, u["identifier"]) || Map.get(state.originals, name) ||
        u["identifier"] || name

    meta = %{
      revision: u["revision"],
      source: Map.get(u, "source", ""),
      timestamp: Variable.time(u["timestamp"]),
      metadata: Map.get(u, "metadata") || %{},
      initial: kind == "initial",
      resync: kind == "resync",
      deleted: kind == "deleted",
      name: name,
      id: u["id"],
      type: type,
      version: u["version"]
    }

    old = Value.from_json(u["old"], type)
    new = Value.from_json(u["new"], type)
    stats = %{state.stats | updates_received: state.stats.updates_received + 1}

    case safely(fn -> state.callback.(ident, old, new, meta) end) do
      :ok -> %{state | stats: stats}
      :error -> %{state | stats: %{stats | errors: stats.errors + 1}}
    end
  end

  defp safely(f) do
    f.()
    :ok
  rescue
    e ->
      Logger.error(
        "varbridge watch callback raised: " <> Exception.format(:error, e, __STACKTRACE__)
      )

      :error
  catch
    kind, reason ->
      Logger.error(
        "varbridge watch callback failed: " <> Exception.format(kind, reason, __STACKTRACE__)
      )

      :error
  end
end

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
  # The stream is read with :httpc's {self, once} mode: the next body part
  # is asked for only once the previous one was handled, so a slow callback
  # holds the TCP window closed instead of growing a buffer here.

  use GenServer, restart: :temporary
  require Logger

  alias VarBridge.{Error, JSON, SSE, Value, Variable}

  @retryable [:unavailable, :internal, :unknown, :aborted, :canceled, :deadline_exceeded]
  @jitter 0.1

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

    {:ok, profile} =
      :inets.start(:httpc, [profile: :"varbridge_watch_#{inspect(ref)}"], :stand_alone)

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
      profile: profile,
      # The request and its reader.
      req: nil,
      handler: nil,
      # This connection starts from now: no resume point, no initial values.
      fresh: false,
      parser: SSE.new(),
      idle_timer: nil,
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
      stats: %{
        updates_received: 0,
        errors: 0,
        reconnects: 0,
        started_at: System.monotonic_time(:millisecond)
      }
    }

    {:ok, state, {:continue, :connect}}
  end

  @impl true
  def handle_continue(:connect, state), do: {:noreply, open(state)}

  @impl true
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
      streaming: state.handler != nil,
      updates_received: state.stats.updates_received,
      errors: state.stats.errors,
      reconnects: state.stats.reconnects,
      last_revision: state.last_rev,
      uptime_ms: System.monotonic_time(:millisecond) - state.stats.started_at
    }

    {:reply, info, state}
  end

  @impl true
  def handle_info({:http, {req, :stream_start, headers, handler}}, %{req: req} = state) do
    state = note_incarnation(state, header(headers, ~c"varbridge-watch-incarnation"))
    :ok = :httpc.stream_next(handler)
    state = %{state | handler: handler, parser: SSE.new(), got_event: false}
    {:noreply, state |> started(:ok) |> arm_idle()}
  end

  def handle_info({:http, {req, :stream, part}}, %{req: req} = state) do
    {events, parser} = SSE.feed(state.parser, part)

    case handle_events(events, %{state | parser: parser}) do
      {:ok, state} ->
        :ok = :httpc.stream_next(state.handler)
        {:noreply, arm_idle(state)}

      {:error, %Error{} = e, state} ->
        broken(cancel(state), e)
    end
  end

  def handle_info({:http, {req, :stream_end, _headers}}, %{req: req} = state) do
    broken(
      %{state | req: nil, handler: nil},
      Error.local(:unavailable, nil, "the server ended the watch stream")
    )
  end

  # A refusal before the stream began: a Connect error object in the body.
  def handle_info({:http, {req, {{_, status, _}, _headers, body}}}, %{req: req} = state) do
    broken(%{state | req: nil, handler: nil}, Error.from_connect(status, body))
  end

  def handle_info({:http, {req, {:error, reason}}}, %{req: req} = state) do
    broken(%{state | req: nil, handler: nil}, Error.transport(reason))
  end

  # Messages of a request given up on.
  def handle_info({:http, _}, state), do: {:noreply, state}

  def handle_info({:idle, req}, %{req: req} = state) do
    broken(cancel(state), Error.local(:unavailable, nil, "no data for #{state.idle_timeout} ms"))
  end

  def handle_info({:idle, _}, state), do: {:noreply, state}

  def handle_info(:reconnect, state) do
    {:noreply, open(%{state | stats: %{state.stats | reconnects: state.stats.reconnects + 1}})}
  end

  def handle_info({:DOWN, owner, :process, _, _}, %{owner: owner} = state),
    do: {:stop, :normal, state}

  def handle_info({:EXIT, profile, reason}, %{profile: profile} = state) do
    {:stop, {:httpc_profile_down, reason}, %{state | profile: nil, req: nil}}
  end

  def handle_info({:EXIT, _, _}, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state) do
    state = cancel(state)
    if state.profile, do: :inets.stop(:stand_alone, state.profile)
    :ok
  end

  # --- the connection ----------------------------------------------------

  defp open(state) do
    s = state.session
    query = Enum.map(state.identifiers, &{"var", to_string(&1)})

    # Initial values are asked for until a revision was complete: after
    # that, the resume point covers them.
    initial = state.include_initial and state.last_rev == nil

    query =
      query ++
        if(state.filter, do: [{"where", state.filter}], else: []) ++
        if(state.heartbeat, do: [{"heartbeat", "#{state.heartbeat}ms"}], else: []) ++
        if(initial, do: [{"initial", "true"}], else: [])

    url =
      "#{s.url}/v1/sessions/#{URI.encode(s.id, &URI.char_unreserved?/1)}/watch?#{URI.encode_query(query)}"

    headers =
      [{~c"accept", ~c"text/event-stream"}] ++
        VarBridge.HTTP.auth(s.token) ++
        case resume_id(state) do
          nil -> []
          id -> [{~c"last-event-id", to_charlist(id)}]
        end

    {:ok, req} =
      :httpc.request(
        :get,
        {to_charlist(url), headers},
        [connect_timeout: 5_000, autoredirect: false],
        [sync: false, stream: {:self, :once}, body_format: :binary],
        state.profile
      )

    arm_idle(%{state | req: req, handler: nil, fresh: resume_id(state) == nil and not initial})
  end

  defp resume_id(%{incarnation: inc, last_rev: rev}) when is_binary(inc) and is_integer(rev),
    do: "#{inc}:#{rev}"

  defp resume_id(_), do: nil

  defp cancel(%{req: nil} = state), do: state

  defp cancel(state) do
    :httpc.cancel_request(state.req, state.profile)
    %{state | req: nil, handler: nil}
  end

  defp arm_idle(state) do
    if state.idle_timer, do: Process.cancel_timer(state.idle_timer)
    %{state | idle_timer: Process.send_after(self(), {:idle, state.req}, state.idle_timeout)}
  end

  # The stream broke or was refused: try again later, or end the watch.
  defp broken(state, %Error{} = e) do
    failures = if state.got_event, do: 1, else: state.failures + 1
    state = %{state | failures: failures, got_event: false}

    cond do
      not state.started and not retryable?(e) ->
        {:stop, :normal, started(state, {:error, e})}

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

  defp header(headers, name) do
    case List.keyfind(headers, name, 0) do
      {_, v} -> to_string(v)
      nil -> nil
    end
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

  defp complete(state, id) do
    case String.split(id, ":", parts: 2) do
      [inc, rev] ->
        case Integer.parse(rev) do
          {rev, ""} -> state |> note_incarnation(inc) |> covered(rev)
          _ -> state
        end

      _ ->
        state
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
        state

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

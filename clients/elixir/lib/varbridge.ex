defmodule VarBridge do
  @moduledoc """
  A client of a varbridge server over HTTP: typed, session-scoped variables
  shared in real time with Go and Python programs, and watches that resume
  after a broken connection with nothing lost or repeated.

      {:ok, conn} = VarBridge.connect(url: "http://127.0.0.1:50052")
      {:ok, session} = VarBridge.initialize_session(conn, "demo")
      {:ok, _} = VarBridge.register_variable(session, "temperature", :float, 0.7, constraints: [min: 0.0, max: 2.0])
      {:ok, ref} =
        VarBridge.watch_variables(session, ["temperature"], fn name, old, new, meta ->
          IO.puts("\#{name}: \#{inspect(old)} -> \#{inspect(new)} at revision \#{meta.revision}")
        end, include_initial: true)
      {:ok, _} = VarBridge.set_variable(session, "temperature", 0.9)
      :ok = VarBridge.unwatch_variables(ref)

  Unary calls are the server's Connect JSON RPCs; watches are its
  Server-Sent Events stream. Every failure is `{:error, %VarBridge.Error{}}`
  with the server's code and reason (see `VarBridge.Error`). Values are
  Elixir terms by type (see `VarBridge.Value`). A variable is named by its
  name or its server-assigned id wherever an identifier is taken, as a
  string or an atom.
  """

  alias VarBridge.{Error, HTTP, Session, TypeCache, Value, Variable}

  defmodule Conn do
    @moduledoc """
    A server to talk to: its HTTP `url`, the `token` calls send, a call
    `timeout` (ms) and, for https, the `tls` options of `:ssl`.
    """
    defstruct [:url, :token, timeout: 15_000, tls: [], profile: :varbridge]

    @type t :: %__MODULE__{
            url: String.t(),
            token: String.t() | nil,
            timeout: pos_integer(),
            tls: keyword(),
            profile: atom()
          }
  end

  @type identifier_t :: String.t() | atom()
  @type result(t) :: {:ok, t} | {:error, Error.t()}

  @doc """
  A connection to the server at `url` (default `"http://127.0.0.1:50052"`,
  `varbridge serve`'s `--http-listen`). Options: `:url`, `:token` (the
  session token or operator token to send as `Authorization: Bearer`),
  `:timeout` of each call in ms (default 15 s), and for an `https://` url
  `:cacertfile` (a PEM file of the CAs to trust; default the system's).
  The server's certificate and host name are verified. Connections are made
  per call, so nothing is dialed here.
  """
  @spec connect(keyword() | String.t()) :: {:ok, Conn.t()} | {:error, Error.t()}
  def connect(url) when is_binary(url), do: connect(url: url)

  def connect(opts) when is_list(opts) do
    url = opts |> Keyword.get(:url, "http://127.0.0.1:50052") |> String.trim_trailing("/")

    case URI.parse(url) do
      %URI{scheme: s, host: h} when s in ["http", "https"] and is_binary(h) and h != "" ->
        tls = if s == "https", do: tls(opts[:cacertfile]), else: []

        {:ok,
         %Conn{
           url: url,
           token: Keyword.get(opts, :token),
           timeout: Keyword.get(opts, :timeout, 15_000),
           tls: tls,
           profile: HTTP.profile(url, tls)
         }}

      _ ->
        {:error,
         Error.local(
           :invalid_argument,
           :invalid_argument,
           "url #{inspect(url)}: want http://HOST:PORT"
         )}
    end
  end

  @doc """
  Creates the session `id` (empty: the server picks one), or joins it when it
  exists (`created: false`). With auth on, the creating call gets the session
  token, which every later call on the returned session sends; to join a
  session someone else created, pass its token as `:token` (or in the
  connection). Options: `:token`, `:ttl` in ms, `:metadata` (string map).
  """
  @spec initialize_session(Conn.t(), String.t() | atom(), keyword()) :: result(Session.t())
  def initialize_session(%Conn{} = conn, id \\ "", opts \\ []) do
    token = Keyword.get(opts, :token, conn.token)

    body =
      %{"sessionId" => to_string(id), "metadata" => Map.new(Keyword.get(opts, :metadata, %{}))}
      |> put_opt("ttl", opts[:ttl], &duration/1)

    with {:ok, resp} <-
           HTTP.call(conn.url, token, "InitializeSession", body,
             timeout: conn.timeout,
             tls: conn.tls,
             profile: conn.profile
           ) do
      s = Map.get(resp, "session", %{})
      token = if (t = resp["sessionToken"]) not in [nil, ""], do: t, else: token

      {:ok,
       %Session{
         url: conn.url,
         tls: conn.tls,
         timeout: conn.timeout,
         profile: conn.profile,
         id: Map.get(s, "sessionId", ""),
         token: token,
         incarnation: s["incarnation"],
         revision: Value.int(s["revision"]),
         expires_at: Variable.time(s["expiresAt"]),
         created: Map.get(resp, "created", false)
       }}
    end
  end

  @doc """
  Describes the session without extending its TTL: a map with `:session_id`,
  `:revision`, `:incarnation`, `:variable_count`, `:watch_count`,
  `:expires_at` and `:metadata`.
  """
  @spec get_session(Session.t()) :: result(map())
  def get_session(%Session{} = s) do
    with {:ok, resp} <- call(s, "GetSession", %{}) do
      m = Map.get(resp, "session", %{})

      {:ok,
       %{
         session_id: Map.get(m, "sessionId", ""),
         revision: Value.int(m["revision"]),
         incarnation: m["incarnation"],
         variable_count: Value.int(m["variableCount"]),
         watch_count: Value.int(m["watchCount"]),
         expires_at: Variable.time(m["expiresAt"]),
         metadata: Map.get(m, "metadata", %{})
       }}
    end
  end

  @doc "Removes the session and its variables, and ends its watches. Returns how many variables went."
  @spec cleanup_session(Session.t()) :: result(non_neg_integer())
  def cleanup_session(%Session{} = s) do
    with {:ok, resp} <- call(s, "CleanupSession", %{}) do
      TypeCache.forget_session(s.url, s.id)
      {:ok, Value.int(resp["variablesRemoved"])}
    end
  end

  @doc """
  Registers a variable of `type` (see `VarBridge.Value`) with its initial
  value. Options: `:constraints` (`min`, `max`, `min_length`, `max_length`,
  `pattern`, `choices`, `allowed_modules`, `dimensions`, `shape`, `dtype`),
  `:metadata`, `:source`.
  """
  @spec register_variable(Session.t(), identifier_t(), Value.type(), term(), keyword()) ::
          result(Variable.t())
  def register_variable(%Session{} = s, name, type, value, opts \\ []) do
    with :ok <- check_type(type),
         {:ok, v} <- wire_value(name, value, type),
         {:ok, c} <- constraints(Keyword.get(opts, :constraints, [])) do
      body = %{
        "name" => to_string(name),
        "type" => Value.type_to_wire(type),
        "initialValue" => v,
        "constraints" => c,
        "metadata" => Map.new(Keyword.get(opts, :metadata, %{}))
      }

      with {:ok, resp} <-
             call(s, "RegisterVariable", put_opt(body, "source", opts[:source], & &1)) do
        {:ok, remember(s, Variable.from_wire(resp["variable"]))}
      end
    end
  end

  @doc "Reads one variable by name or id. (No options yet; the third argument is for later ones.)"
  @spec get_variable(Session.t(), identifier_t(), keyword()) :: result(Variable.t())
  def get_variable(%Session{} = s, identifier, _opts \\ []) do
    with {:ok, resp} <- call(s, "GetVariable", %{"variableIdentifier" => to_string(identifier)}) do
      {:ok, remember(s, Variable.from_wire(resp["variable"]))}
    end
  end

  @doc """
  Writes one variable and returns it after the write. Writing the value it
  already has changes nothing (no new version, no update to watchers).
  Options: `:metadata` (delivered to watchers), `:source`,
  `:expected_version` (compare-and-set: else a `:version_conflict` error).
  """
  @spec set_variable(Session.t(), identifier_t(), term(), keyword()) :: result(Variable.t())
  def set_variable(%Session{} = s, identifier, value, opts \\ []) do
    ident = to_string(identifier)
    cached = TypeCache.get(s.url, s.id, ident)

    with {:ok, type} <- type_for(s, ident, value, cached),
         {:ok, v} <- wire_value(ident, value, type) do
      body =
        %{
          "variableIdentifier" => ident,
          "value" => v,
          "metadata" => Map.new(Keyword.get(opts, :metadata, %{}))
        }
        |> put_opt("expectedVersion", opts[:expected_version], &Integer.to_string/1)
        |> put_opt("source", opts[:source], & &1)

      case call(s, "SetVariable", body) do
        {:ok, resp} ->
          {:ok, remember(s, Variable.from_wire(resp["variable"]))}

        # A cached type can be stale (the variable was deleted and
        # registered again with another type): read it once more.
        {:error, %Error{reason: :invalid_argument, details: %{"field" => "value"}}} = err
        when cached != nil ->
          TypeCache.forget(s.url, s.id, ident)

          if type_for(s, ident, value, nil) == {:ok, cached},
            do: err,
            else: set_variable(s, identifier, value, opts)

        err ->
          err
      end
    end
  end

  @doc """
  Writes many variables atomically (all or nothing, one revision):
  `updates` maps identifiers to values. Options: `:metadata`, `:source`,
  `:expected_versions` (identifier to version). Returns `%{variables: %{ident
  => Variable}, revision: r, changed: [ident]}`.
  """
  @spec set_variables(Session.t(), %{optional(identifier_t()) => term()}, keyword()) ::
          result(map())
  def set_variables(%Session{} = s, updates, opts \\ []) do
    wire =
      Enum.reduce_while(updates, {:ok, %{}}, fn {ident, value}, {:ok, acc} ->
        ident = to_string(ident)

        with {:ok, type} <- type_for(s, ident, value, TypeCache.get(s.url, s.id, ident)),
             {:ok, v} <- wire_value(ident, value, type) do
          {:cont, {:ok, Map.put(acc, ident, v)}}
        else
          # Unknown here: let the server name every missing identifier.
          {:error, %Error{reason: :variable_not_found}} ->
            {:ok, v} = wire_value(ident, value, nil)
            {:cont, {:ok, Map.put(acc, ident, v)}}

          err ->
            {:halt, err}
        end
      end)

    with {:ok, wire} <- wire do
      body =
        %{"updates" => wire, "metadata" => Map.new(Keyword.get(opts, :metadata, %{}))}
        |> put_opt("expectedVersions", opts[:expected_versions], fn m ->
          Map.new(m, fn {k, v} -> {to_string(k), Integer.to_string(v)} end)
        end)
        |> put_opt("source", opts[:source], & &1)

      with {:ok, resp} <- call(s, "SetVariables", body) do
        vars =
          Map.new(Map.get(resp, "variables", %{}), fn {k, v} ->
            {k, remember(s, Variable.from_wire(v))}
          end)

        {:ok,
         %{
           variables: vars,
           revision: Value.int(resp["revision"]),
           changed: Map.get(resp, "changed", [])
         }}
      end
    end
  end

  @doc "Lists the session's variables sorted by name; `pattern:` a glob on names."
  @spec list_variables(Session.t(), keyword()) :: result([Variable.t()])
  def list_variables(%Session{} = s, opts \\ []) do
    with {:ok, resp} <- call(s, "ListVariables", %{"pattern" => Keyword.get(opts, :pattern, "")}) do
      {:ok, for(v <- Map.get(resp, "variables", []), do: remember(s, Variable.from_wire(v)))}
    end
  end

  @doc "Deletes a variable (watchers get a deleted update); returns it as it was."
  @spec delete_variable(Session.t(), identifier_t(), keyword()) :: result(Variable.t())
  def delete_variable(%Session{} = s, identifier, opts \\ []) do
    body =
      %{
        "variableIdentifier" => to_string(identifier),
        "metadata" => Map.new(Keyword.get(opts, :metadata, %{}))
      }
      |> put_opt("source", opts[:source], & &1)

    with {:ok, resp} <- call(s, "DeleteVariable", body) do
      var = Variable.from_wire(resp["variable"])
      TypeCache.forget(s.url, s.id, var.name)
      TypeCache.forget(s.url, s.id, var.id)
      {:ok, var}
    end
  end

  @doc """
  Watches variables (names or ids, strings or atoms; `[]` watches every
  variable in the session, including ones registered later) and calls
  `callback.(identifier, old, new, meta)` once per update, one call at a
  time, in revision order, from the watch's own process. `identifier` is
  exactly what you passed (the name, for a watch of everything). `meta` has
  `:revision`, `:source`, `:timestamp`, `:metadata` (the writer's),
  `:initial`, `:resync`, `:deleted`, `:name`, `:id`, `:type` and `:version`.

  Options:
    * `include_initial: true` - each variable's current value first (`old` is nil).
    * `filter: "new > 1.0"` - a server-side CEL expression over `old`, `new`,
      `name` and `metadata`; only the updates it accepts are sent.
    * `on_error: fn error -> ... end` - called when the watch ends for good.
    * `owner: pid` - the watch stops when this process exits (default: the
      caller; `nil` for none).
    * `heartbeat: ms` - the server's heartbeat interval (default the
      server's, 5 s).
    * `backoff: {base_ms, max_ms}` (default `{1000, 30000}`), `max_failures`
      (default 10 consecutive failed reconnects), `idle_timeout` (ms without
      a byte, heartbeats included, before the connection counts as dead;
      default 4 heartbeats).

  A raising callback is logged and counted; the watch goes on. When the
  connection breaks, the watch reconnects with exponential backoff and
  jitter and resumes after the last complete revision it delivered
  (`Last-Event-ID`), so no update is lost or repeated; if the session was
  created anew meanwhile, it delivers every watched variable's current value
  with `resync: true` and goes on.

  Returns `{:ok, ref}` once the server has accepted the watch, or the
  error of that first connection (an unknown variable:
  `:variable_not_found`; no server: `:unavailable`).
  """
  @spec watch_variables(
          Session.t(),
          [identifier_t()],
          (term(), term(), term(), map() -> any()),
          keyword()
        ) ::
          result(reference())
  def watch_variables(%Session{} = s, identifiers, callback, opts \\ [])
      when is_list(identifiers) and is_function(callback, 4) do
    opts = Keyword.put_new(opts, :owner, self())
    ref = make_ref()
    args = %{session: s, identifiers: identifiers, callback: callback, opts: opts, ref: ref}

    case DynamicSupervisor.start_child(VarBridge.WatchSupervisor, {VarBridge.Watch, args}) do
      {:ok, pid} ->
        case VarBridge.Watch.await_started(pid) do
          :ok -> {:ok, ref}
          {:error, _} = err -> err
        end

      {:error, reason} ->
        {:error, Error.local(:internal, nil, "watch: #{inspect(reason)}")}
    end
  end

  @doc """
  Stops a watch: once this returns, its callback is not called again.
  An unknown ref is `{:error, %VarBridge.Error{code: :not_found, reason: :unknown_watch}}`.
  """
  @spec unwatch_variables(reference()) :: :ok | {:error, Error.t()}
  def unwatch_variables(ref) do
    with [{pid, _}] <- Registry.lookup(VarBridge.Watches, ref),
         :ok <- DynamicSupervisor.terminate_child(VarBridge.WatchSupervisor, pid) do
      :ok
    else
      _ -> {:error, Error.local(:not_found, :unknown_watch, "no watch with ref #{inspect(ref)}")}
    end
  end

  @doc """
  The open watches: per watch its `:ref`, `:pid`, `:session_id`,
  `:identifiers`, `:alive`, `:streaming` (connected now), `:updates_received`,
  `:errors` (callbacks that raised), `:reconnects`, `:resent_skipped`
  (updates the server sent again after a cut inside their revision, not
  delivered twice), `:last_revision` (the last complete one) and `:uptime_ms`.
  """
  @spec list_watchers() :: [map()]
  def list_watchers do
    for {_, pid, _, _} <- DynamicSupervisor.which_children(VarBridge.WatchSupervisor),
        is_pid(pid),
        info = VarBridge.Watch.info(pid),
        info != nil,
        do: info
  end

  # --- helpers -----------------------------------------------------------

  defp call(%Session{url: url, token: token, id: id} = s, method, body) do
    HTTP.call(url, token, method, Map.put(body, "sessionId", id),
      timeout: s.timeout,
      tls: s.tls,
      profile: s.profile
    )
  end

  defp remember(%Session{} = s, %Variable{} = v) do
    TypeCache.put(s.url, s.id, v)
    v
  end

  # Only an integer needs the variable's type: a float variable takes it as
  # a float. Unknown types are read once and kept.
  defp type_for(_s, _ident, value, _cached) when not is_integer(value), do: {:ok, nil}
  defp type_for(_s, _ident, _value, cached) when cached != nil, do: {:ok, cached}

  defp type_for(s, ident, _value, nil) do
    with {:ok, var} <- get_variable(s, ident), do: {:ok, var.type}
  end

  defp wire_value(name, value, type) do
    case Value.to_wire(value, type) do
      {:ok, v} ->
        {:ok, v}

      :error ->
        {:error,
         Error.local(
           :invalid_argument,
           :invalid_argument,
           "#{name}: no variable type holds #{inspect(value)}",
           %{
             "field" => "value"
           }
         )}
    end
  end

  defp check_type(type) do
    if type in Value.types(),
      do: :ok,
      else:
        {:error,
         Error.local(
           :invalid_argument,
           :invalid_argument,
           "type #{inspect(type)}: want one of #{inspect(Value.types())}",
           %{
             "field" => "type"
           }
         )}
  end

  defp constraints(c) do
    case Value.constraints_to_wire(c) do
      {:ok, wire} ->
        {:ok, wire}

      {:error, k} ->
        {:error,
         Error.local(:invalid_argument, :invalid_argument, "unknown constraint #{inspect(k)}", %{
           "field" => "constraints"
         })}
    end
  end

  # Verify the server's certificate chain and its host name, or its IP
  # address: given a host as text, :ssl compares it with the certificate's
  # DNS names only, so an https://127.0.0.1 url is matched against the
  # certificate's IP addresses here.
  defp tls(cacertfile) do
    cas = if cacertfile, do: [cacertfile: cacertfile], else: [cacerts: :public_key.cacerts_get()]
    [verify: :verify_peer, customize_hostname_check: [match_fun: &match_host/2]] ++ cas
  end

  @doc false
  def match_host({:dns_id, host} = ref, {:iPAddress, bytes} = presented) do
    case :inet.parse_address(host) do
      {:ok, ip} -> Tuple.to_list(ip) == bytes
      {:error, _} -> :public_key.pkix_verify_hostname_match_fun(:https).(ref, presented)
    end
  end

  def match_host(ref, presented),
    do: :public_key.pkix_verify_hostname_match_fun(:https).(ref, presented)

  defp put_opt(body, _key, nil, _f), do: body
  defp put_opt(body, key, v, f), do: Map.put(body, key, f.(v))

  defp duration(ms) when is_integer(ms) and ms >= 0 do
    :io_lib.format("~.3fs", [ms / 1000]) |> IO.iodata_to_binary()
  end
end

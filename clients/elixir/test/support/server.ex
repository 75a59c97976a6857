defmodule VarBridge.Test.Server do
  @moduledoc false
  # The real varbridge server binary, started on free loopback ports for a
  # test module: `varbridge serve --listen 127.0.0.1:0 --http-listen
  # 127.0.0.1:0` (and --memory when this build has it), reading both
  # addresses from the lines it prints. The process owns the port and
  # drains its output. The server runs under a small sh that kills it when
  # the port's stdin closes: when this process stops, and also when the
  # whole VM goes away without stopping it.
  use GenServer

  def child_spec(args),
    do: %{id: __MODULE__, start: {__MODULE__, :start_link, [args]}, restart: :temporary}

  def start_link(args \\ []), do: GenServer.start_link(__MODULE__, args)

  @doc "The server's %{http: url, grpc: addr, bin: path}."
  def addrs(pid), do: GenServer.call(pid, :addrs)

  def bin do
    System.get_env("VARBRIDGE_BIN") || Path.expand("../../.bin/varbridge", File.cwd!())
  end

  # $1 is the binary, the rest its arguments. The reader in the background
  # sees end of file when the port closes (it reads the port through fd 3:
  # sh gives background commands /dev/null as their standard input).
  @guard ~S"""
  exec 3<&0
  "$@" &
  pid=$!
  echo "server pid $pid"
  (cat <&3 >/dev/null; kill -KILL $pid 2>/dev/null) &
  wait $pid
  """

  @impl true
  def init(args) do
    Process.flag(:trap_exit, true)
    bin = bin()

    unless File.exists?(bin) do
      raise "no varbridge binary at #{bin}: run `make build` in the repository root or set VARBRIDGE_BIN"
    end

    {help, 0} = System.cmd(bin, ["serve", "--help"], stderr_to_stdout: true)

    unless help =~ "--http-listen" do
      raise "#{bin} serve has no --http-listen: this client needs a server with the HTTP face"
    end

    # Nothing of a test server outlives it: in memory where it can, else in
    # a data directory of its own.
    {store, data_dir} =
      cond do
        help =~ "--memory" ->
          {["--memory"], nil}

        help =~ "--data-dir" ->
          dir = Path.join(System.tmp_dir!(), "varbridge-ex-#{System.unique_integer([:positive])}")
          {["--data-dir", dir], dir}

        true ->
          {[], nil}
      end

    argv =
      ["serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"] ++
        store ++ Keyword.get(args, :extra, [])

    port =
      Port.open({:spawn_executable, "/bin/sh"}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        {:line, 65_536},
        args: ["-c", @guard, "sh", bin | argv]
      ])

    addrs = await_addrs(port, %{bin: bin}, System.monotonic_time(:millisecond) + 20_000)
    {:ok, %{port: port, addrs: addrs, data_dir: data_dir, pid: addrs.pid}}
  end

  defp await_addrs(_port, %{http: _, grpc: _, pid: _} = a, _deadline), do: a

  defp await_addrs(port, a, deadline) do
    left = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {^port, {:data, {:eol, "server pid " <> pid}}} ->
        await_addrs(port, Map.put(a, :pid, String.trim(pid)), deadline)

      {^port, {:data, {:eol, "http on " <> url}}} ->
        await_addrs(port, Map.put(a, :http, String.trim(url)), deadline)

      {^port, {:data, {:eol, "listening on " <> addr}}} ->
        await_addrs(port, Map.put(a, :grpc, String.trim(addr)), deadline)

      {^port, {:data, _}} ->
        await_addrs(port, a, deadline)

      {^port, {:exit_status, st}} ->
        raise "varbridge serve exited with status #{st} before it listened"
    after
      left -> raise "varbridge serve printed no 'listening on' and 'http on' lines in 20 s"
    end
  end

  @impl true
  def handle_call(:addrs, _from, state), do: {:reply, state.addrs, state}

  @impl true
  def handle_info({port, {:data, _}}, %{port: port} = state), do: {:noreply, state}

  def handle_info({port, {:exit_status, st}}, %{port: port} = state),
    do: {:stop, {:server_exited, st}, state}

  def handle_info({:EXIT, _, _}, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state) do
    # Closing the port ends the server (see @guard); wait (bounded) for that.
    Port.close(state.port)
    await_exit(state.pid, 200)
    if state.data_dir, do: File.rm_rf(state.data_dir)
    :ok
  end

  defp await_exit(_pid, 0), do: :ok

  defp await_exit(pid, tries) do
    case System.cmd("kill", ["-0", pid], stderr_to_stdout: true) do
      {_, 0} ->
        Process.sleep(10)
        await_exit(pid, tries - 1)

      _ ->
        :ok
    end
  end
end

defmodule VarBridge.Test.CutProxy do
  @moduledoc false
  # A TCP proxy on 127.0.0.1 that can cut every connection it carries at
  # once (both sides closed), as a network failure would, and goes on
  # accepting new ones.
  use GenServer

  def child_spec(upstream),
    do: %{id: __MODULE__, start: {__MODULE__, :start_link, [upstream]}, restart: :temporary}

  def start_link(upstream), do: GenServer.start_link(__MODULE__, upstream)

  def port(pid), do: GenServer.call(pid, :port)

  @doc "Closes every open connection; returns how many there were."
  def cut(pid), do: GenServer.call(pid, :cut)

  @doc """
  Arms a cut inside a revision: the next time the server sends an update
  event without an SSE id (one that does not complete its revision), the
  proxy passes that event on and then cuts every connection.
  """
  def cut_mid_revision(pid), do: GenServer.call(pid, :arm)

  @doc "While refusing, new connections are closed at once (a server that is down)."
  def refuse(pid, refusing?), do: GenServer.call(pid, {:refuse, refusing?})

  @doc "How many armed cuts happened."
  def mid_revision_cuts(pid), do: GenServer.call(pid, :mid_cuts)

  @impl true
  def init({host, port}) do
    {:ok, lsock} =
      :gen_tcp.listen(0, [:binary, ip: {127, 0, 0, 1}, active: false, reuseaddr: true])

    {:ok, lport} = :inet.port(lsock)
    me = self()
    acceptor = spawn_link(fn -> accept(lsock, me) end)

    {:ok,
     %{
       lsock: lsock,
       port: lport,
       upstream: {host, port},
       acceptor: acceptor,
       conns: %{},
       armed: false,
       mid_cuts: 0
     }}
  end

  defp accept(lsock, proxy) do
    case :gen_tcp.accept(lsock) do
      {:ok, sock} ->
        :ok = :gen_tcp.controlling_process(sock, proxy)
        send(proxy, {:accepted, sock})
        accept(lsock, proxy)

      {:error, _} ->
        :ok
    end
  end

  @impl true
  def handle_call(:port, _from, state), do: {:reply, state.port, state}

  def handle_call(:cut, _from, state), do: {:reply, map_size(state.conns), cut_all(state)}
  def handle_call(:arm, _from, state), do: {:reply, :ok, %{state | armed: true}}
  def handle_call({:refuse, r}, _from, state), do: {:reply, :ok, Map.put(state, :refusing, r)}
  def handle_call(:mid_cuts, _from, state), do: {:reply, state.mid_cuts, state}

  defp cut_all(state) do
    for {down, up} <- state.conns do
      :gen_tcp.close(down)
      :gen_tcp.close(up)
    end

    %{state | conns: %{}}
  end

  @impl true
  def handle_info({:accepted, down}, %{refusing: true} = state) do
    :gen_tcp.close(down)
    {:noreply, state}
  end

  def handle_info({:accepted, down}, state) do
    {host, port} = state.upstream

    case :gen_tcp.connect(to_charlist(host), port, [:binary, active: true, nodelay: true]) do
      {:ok, up} ->
        :ok = :inet.setopts(down, active: true, nodelay: true)
        {:noreply, %{state | conns: Map.put(state.conns, down, up)}}

      {:error, _} ->
        :gen_tcp.close(down)
        {:noreply, state}
    end
  end

  def handle_info({:tcp, sock, data}, state) do
    downstream? = not Map.has_key?(state.conns, sock)

    case {peer(state, sock), state.armed and downstream? and idless_event_end(data)} do
      {nil, _} ->
        {:noreply, state}

      {other, false} ->
        :gen_tcp.send(other, data)
        {:noreply, state}

      {other, stop} ->
        :gen_tcp.send(other, binary_part(data, 0, stop))
        {:noreply, %{cut_all(state) | armed: false, mid_cuts: state.mid_cuts + 1}}
    end
  end

  def handle_info({closed, sock}, state) when closed in [:tcp_closed, :tcp_error] do
    {:noreply, drop(state, sock)}
  end

  def handle_info({:tcp_error, sock, _}, state), do: {:noreply, drop(state, sock)}

  # The end of the first event in data that is an update without an id:
  # the server writes "id:" before "data:", so such an event starts with
  # its data line. false when data holds none whole.
  @update ~s(data: {"revision":)
  defp idless_event_end(data) do
    starts =
      if(String.starts_with?(data, @update), do: [0], else: []) ++
        for({pos, _} <- :binary.matches(data, "\n\n" <> @update), do: pos + 2)

    Enum.find_value(starts, false, fn start ->
      case :binary.match(data, "\n\n", scope: {start, byte_size(data) - start}) do
        {pos, 2} -> pos + 2
        :nomatch -> nil
      end
    end)
  end

  defp peer(state, sock) do
    case Map.fetch(state.conns, sock) do
      {:ok, up} -> up
      :error -> Enum.find_value(state.conns, fn {d, u} -> if u == sock, do: d end)
    end
  end

  defp drop(state, sock) do
    case Enum.find(state.conns, fn {d, u} -> d == sock or u == sock end) do
      {d, u} ->
        :gen_tcp.close(d)
        :gen_tcp.close(u)
        %{state | conns: Map.delete(state.conns, d)}

      nil ->
        state
    end
  end
end

defmodule VarBridge.Test.Python do
  @moduledoc false
  # The Python with the varbridge package for the cross-language test:
  # VARBRIDGE_PYTHON, else the repository's .venv.

  def path do
    System.get_env("VARBRIDGE_PYTHON") || Path.expand("../../.venv/bin/python", File.cwd!())
  end

  @doc "nil when it can run the scenario, else why not."
  def missing do
    py = path()

    cond do
      not File.exists?(py) -> "no Python at #{py}"
      match?({_, 0}, System.cmd(py, ["-c", "import varbridge"], stderr_to_stdout: true)) -> nil
      true -> "#{py} cannot import varbridge"
    end
  end
end

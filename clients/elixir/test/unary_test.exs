defmodule VarBridge.UnaryTest do
  use VarBridge.Test.ServerCase, async: true

  alias VarBridge.{Error, Tensor, Variable}

  test "register, get, set, list, delete: values of every type round-trip", %{session: s} do
    values = [
      {"i", :integer, 9_007_199_254_740_993, -3},
      {"f", :float, 0.7, 2},
      {"s", :string, "héllo", "wörld"},
      {"b", :boolean, false, true},
      {"c", :choice, "a", "b"},
      {"e", :embedding, [1.0, 2.5], [3, -0.5]},
      {"t", :tensor, %Tensor{shape: [2], dtype: "uint8", data: <<1, 2>>},
       %Tensor{shape: [1, 2], dtype: "uint8", data: <<3, 4>>}}
    ]

    for {name, type, first, second} <- values do
      opts = if type == :choice, do: [constraints: [choices: ["a", "b"]]], else: []

      assert {:ok, %Variable{name: ^name, type: ^type, value: ^first, version: 1}} =
               VarBridge.register_variable(s, name, type, first, opts)

      # An integer written to a float variable goes as a float.
      want = if type == :float, do: 2.0, else: second
      want = if type == :embedding, do: [3.0, -0.5], else: want

      assert {:ok, %Variable{value: ^want, version: 2, source: "ex"}} =
               VarBridge.set_variable(s, name, second, source: "ex", metadata: %{"why" => "test"})

      assert {:ok, %Variable{value: ^want}} = VarBridge.get_variable(s, name)
    end

    {:ok, vars} = VarBridge.list_variables(s)
    assert Enum.map(vars, & &1.name) == ~w(b c e f i s t)
    {:ok, [%Variable{name: "f", id: id}]} = VarBridge.list_variables(s, pattern: "f*")
    assert {:ok, %Variable{name: "f", value: 2.0}} = VarBridge.get_variable(s, id)
    assert {:ok, %Variable{name: "f"}} = VarBridge.delete_variable(s, :f)
    assert {:error, %Error{reason: :variable_not_found}} = VarBridge.get_variable(s, "f")
    assert {:ok, %{variable_count: 6, session_id: sid}} = VarBridge.get_session(s)
    assert sid == s.id
  end

  test "set_variables writes atomically at one revision", %{session: s} do
    {:ok, _} = VarBridge.register_variable(s, "x", :integer, 0)
    {:ok, _} = VarBridge.register_variable(s, "y", :float, 0.0)

    assert {:ok, %{revision: rev, changed: changed, variables: %{"x" => x, "y" => y}}} =
             VarBridge.set_variables(s, %{"x" => 1, :y => 2})

    assert Enum.sort(changed) == ["x", "y"]
    assert x.value == 1 and y.value == 2.0 and x.revision == rev and y.revision == rev

    # All or nothing: one unknown identifier fails the whole write.
    assert {:error, %Error{code: :not_found, reason: :variable_not_found}} =
             VarBridge.set_variables(s, %{"x" => 5, "nope" => 1})

    assert {:ok, %Variable{value: 1}} = VarBridge.get_variable(s, "x")
  end

  test "errors carry the server's code, reason and details", %{session: s, conn: conn} do
    {:ok, v} =
      VarBridge.register_variable(s, "temperature", :float, 0.7, constraints: [min: 0.0, max: 2.0])

    assert {:error, %Error{code: :not_found, reason: :variable_not_found}} =
             VarBridge.get_variable(s, "nothing")

    assert {:error, %Error{code: :invalid_argument, reason: :constraint_violation, details: d}} =
             VarBridge.set_variable(s, "temperature", 3.5)

    assert %{"variable" => "temperature", "constraint" => "max"} = d

    assert {:error, %Error{code: :failed_precondition, reason: :version_conflict, details: d}} =
             VarBridge.set_variable(s, "temperature", 0.9, expected_version: v.version + 1)

    assert %{"expected_version" => "2", "actual_version" => "1"} = d

    assert {:ok, %Variable{version: 2}} =
             VarBridge.set_variable(s, "temperature", 0.9, expected_version: 1)

    assert {:error, %Error{code: :already_exists, reason: :variable_exists}} =
             VarBridge.register_variable(s, "temperature", :float, 1.0)

    assert {:error, %Error{code: :invalid_argument, reason: :invalid_argument}} =
             VarBridge.set_variable(s, "temperature", "hot")

    gone = %{s | id: "no-such-session-#{System.unique_integer([:positive])}"}

    assert {:error, %Error{code: :not_found, reason: :session_not_found}} =
             VarBridge.get_variable(gone, "x")

    # Refused before it reaches the server.
    assert {:error, %Error{code: :invalid_argument, details: %{"field" => "value"}}} =
             VarBridge.set_variable(s, "temperature", %{not: :a_value})

    assert {:error, %Error{reason: :invalid_argument}} =
             VarBridge.register_variable(s, "z", :complex, 1)

    assert {:error, %Error{}} = VarBridge.connect(url: "ftp://x")
    assert %Error{} = e = elem(VarBridge.get_variable(s, "nothing"), 1)
    assert Exception.message(e) =~ "variable_not_found"
    _ = conn
  end

  test "initialize_session joins an existing session; cleanup removes it", %{conn: conn} do
    id = "ex-join-#{System.unique_integer([:positive])}"
    {:ok, s} = VarBridge.initialize_session(conn, id, metadata: %{"who" => "ex"}, ttl: 60_000)
    assert s.created and s.id == id and is_binary(s.incarnation)
    {:ok, again} = VarBridge.initialize_session(conn, id)
    refute again.created
    assert again.incarnation == s.incarnation
    {:ok, _} = VarBridge.register_variable(s, "a", :integer, 1)
    assert {:ok, 1} = VarBridge.cleanup_session(s)
    assert {:error, %Error{reason: :session_not_found}} = VarBridge.get_session(s)
  end

  test "a server that is not there is :unavailable" do
    {:ok, lsock} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(lsock)
    :gen_tcp.close(lsock)
    {:ok, conn} = VarBridge.connect(url: "http://127.0.0.1:#{port}")

    assert {:error, %Error{code: :unavailable, reason: nil}} =
             VarBridge.initialize_session(conn, "x")

    # A watch's first connection that fails is the call's answer.
    s = %VarBridge.Session{url: conn.url, id: "x"}

    assert {:error, %Error{code: :unavailable}} =
             VarBridge.watch_variables(s, ["a"], fn _, _, _, _ -> :ok end)
  end
end

defmodule VarBridge.TLSTest do
  # A server with --tls-cert/--tls-key serves HTTPS: unary calls and watches
  # verify its certificate chain against :cacertfile and its address against
  # the certificate, and refuse it otherwise.
  use ExUnit.Case, async: true

  alias VarBridge.Error

  @moduletag :capture_log

  setup_all do
    dir = Path.join(System.tmp_dir!(), "varbridge-ex-tls-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf(dir) end)

    # A CA, and the server's certificate for IP 127.0.0.1 signed by it.
    [ca, ca_key, csr, cert, key, ext] =
      Enum.map(~w(ca.pem ca.key leaf.csr leaf.pem leaf.key ext.cnf), &Path.join(dir, &1))

    File.write!(ext, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")

    for args <- [
          ~w(req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=varbridge-test-ca -keyout) ++
            [ca_key, "-out", ca],
          ~w(req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout) ++ [key, "-out", csr],
          ~w(x509 -req -days 1 -set_serial 1 -in) ++
            [csr, "-CA", ca, "-CAkey", ca_key, "-extfile", ext, "-out", cert]
        ] do
      {out, status} = System.cmd("openssl", args, stderr_to_stdout: true)
      if status != 0, do: raise("openssl #{Enum.join(args, " ")}: #{out}")
    end

    server =
      start_supervised!({VarBridge.Test.Server, extra: ["--tls-cert", cert, "--tls-key", key]})

    %{url: VarBridge.Test.Server.addrs(server).http, ca: ca}
  end

  test "calls and a watch over https", %{url: "https://" <> _ = url, ca: ca} do
    {:ok, conn} = VarBridge.connect(url: url, cacertfile: ca)
    {:ok, s} = VarBridge.initialize_session(conn, "tls-#{System.unique_integer([:positive])}")
    {:ok, _} = VarBridge.register_variable(s, "a", :integer, 1)
    to_me = VarBridge.Test.ServerCase.to_me()
    {:ok, ref} = VarBridge.watch_variables(s, ["a"], to_me, include_initial: true)
    assert_receive {:update, "a", nil, 1, %{initial: true}}, 5_000
    {:ok, _} = VarBridge.set_variable(s, "a", 2)
    assert_receive {:update, "a", 1, 2, _}, 5_000
    :ok = VarBridge.unwatch_variables(ref)
    {:ok, _} = VarBridge.cleanup_session(s)
  end

  test "a certificate not trusted, or of another address, is refused", %{url: url, ca: ca} do
    {:ok, untrusted} = VarBridge.connect(url: url)
    # The same server by another name than its certificate's.
    other_name = String.replace(url, "127.0.0.1", "localhost")
    {:ok, misnamed} = VarBridge.connect(url: other_name, cacertfile: ca)

    for conn <- [untrusted, misnamed] do
      assert {:error, %Error{code: :unavailable}} = VarBridge.initialize_session(conn, "x")
      s = %VarBridge.Session{url: conn.url, id: "x", tls: conn.tls}

      assert {:error, %Error{code: :unavailable}} =
               VarBridge.watch_variables(s, ["a"], fn _, _, _, _ -> :ok end)
    end
  end
end

from charrnn.cli import main  # first: it sets OMP_WAIT_POLICY before torch is imported

main()

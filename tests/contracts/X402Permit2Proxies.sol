// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

// pay402's OWN TEST implementation of the x402 Permit2 proxies, written from the x402 specs
// (specs/schemes/exact/scheme_exact_evm.md, Permit2 section, and
// specs/schemes/upto/scheme_upto_evm.md). It is NOT the x402 Foundation's deployed contract: no
// registry ships that one, so pay402's anvil tests install this at the proxies' canonical
// addresses (anvil_setCode) in front of Uniswap's original Permit2. The settle ABI is the one
// the x402 SDKs call. Compiled with npm solc 0.8.30 into X402Permit2Proxies.json (see
// tests/anvil_permit2.rs, which checks recompiling reproduces it).
//
// Both proxies only forward a buyer-signed PermitWitnessTransferFrom to Permit2: Permit2 checks
// the signature (binding the spender — this proxy — and the witness), the deadline, the nonce
// and the amount ceiling; the proxy adds the checks that need the witness: validAfter, and for
// upto the facilitator allowed to settle. The funds always go to witness.to.

/// The part of Permit2's ISignatureTransfer the proxies use.
interface ISignatureTransfer {
    struct TokenPermissions {
        address token;
        uint256 amount;
    }

    struct PermitTransferFrom {
        TokenPermissions permitted;
        uint256 nonce;
        uint256 deadline;
    }

    struct SignatureTransferDetails {
        address to;
        uint256 requestedAmount;
    }

    function permitWitnessTransferFrom(
        PermitTransferFrom calldata permit,
        SignatureTransferDetails calldata transferDetails,
        address owner,
        bytes32 witness,
        string calldata witnessTypeString,
        bytes calldata signature
    ) external;
}

/// What both proxies share: the canonical Permit2 and the common refusals.
abstract contract X402Permit2ProxyBase {
    /// The canonical Permit2 (the same address on every chain).
    ISignatureTransfer public constant PERMIT2 = ISignatureTransfer(0x000000000022D473030F116dDEE9F6B43aC78BA3);

    /// The authorization is not valid yet (block.timestamp < witness.validAfter).
    error PaymentTooEarly();
    /// witness.to is the zero address.
    error InvalidDestination();
    /// owner is the zero address.
    error InvalidOwner();

    /// A payment moved `amount` of `token` from `owner` to `to`.
    event Settled(address indexed token, address indexed owner, address indexed to, uint256 amount);

    function checkCommon(address owner, address to, uint256 validAfter) internal view {
        if (owner == address(0)) revert InvalidOwner();
        if (to == address(0)) revert InvalidDestination();
        if (block.timestamp < validAfter) revert PaymentTooEarly();
    }
}

/// The x402 exact Permit2 proxy: moves exactly the signed amount to witness.to.
contract X402ExactPermit2Proxy is X402Permit2ProxyBase {
    /// The x402 exact witness.
    struct Witness {
        address to;
        uint256 validAfter;
    }

    /// keccak256 of the witness struct's EIP-712 type.
    bytes32 public constant WITNESS_TYPEHASH = keccak256("Witness(address to,uint256 validAfter)");

    /// The witness part of Permit2's PermitWitnessTransferFrom type string (the witness field,
    /// then the referenced struct types in alphabetical order).
    string public constant WITNESS_TYPE_STRING =
        "Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,uint256 validAfter)";

    /// Settles a Permit2 exact payment: the full permitted amount goes to witness.to.
    function settle(
        ISignatureTransfer.PermitTransferFrom calldata permit,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) external {
        checkCommon(owner, witness.to, witness.validAfter);
        uint256 amount = permit.permitted.amount;
        bytes32 witnessHash = keccak256(abi.encode(WITNESS_TYPEHASH, witness.to, witness.validAfter));
        PERMIT2.permitWitnessTransferFrom(
            permit,
            ISignatureTransfer.SignatureTransferDetails({to: witness.to, requestedAmount: amount}),
            owner,
            witnessHash,
            WITNESS_TYPE_STRING,
            signature
        );
        emit Settled(permit.permitted.token, owner, witness.to, amount);
    }
}

/// The x402 upto Permit2 proxy: the facilitator named in the witness moves any amount up to the
/// signed maximum to witness.to.
contract X402UptoPermit2Proxy is X402Permit2ProxyBase {
    /// The x402 upto witness.
    struct Witness {
        address to;
        address facilitator;
        uint256 validAfter;
    }

    /// The caller is not the facilitator the buyer named.
    error UnauthorizedFacilitator();
    /// The amount to settle is above the signed maximum.
    error AmountExceedsPermitted();

    /// keccak256 of the witness struct's EIP-712 type.
    bytes32 public constant WITNESS_TYPEHASH = keccak256("Witness(address to,address facilitator,uint256 validAfter)");

    /// The witness part of Permit2's PermitWitnessTransferFrom type string.
    string public constant WITNESS_TYPE_STRING =
        "Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,address facilitator,uint256 validAfter)";

    /// Settles `amount` (at most permit.permitted.amount) of an upto authorization to witness.to;
    /// only witness.facilitator may call it.
    function settle(
        ISignatureTransfer.PermitTransferFrom calldata permit,
        uint256 amount,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) external {
        if (msg.sender != witness.facilitator) revert UnauthorizedFacilitator();
        if (amount > permit.permitted.amount) revert AmountExceedsPermitted();
        checkCommon(owner, witness.to, witness.validAfter);
        bytes32 witnessHash =
            keccak256(abi.encode(WITNESS_TYPEHASH, witness.to, witness.facilitator, witness.validAfter));
        PERMIT2.permitWitnessTransferFrom(
            permit,
            ISignatureTransfer.SignatureTransferDetails({to: witness.to, requestedAmount: amount}),
            owner,
            witnessHash,
            WITNESS_TYPE_STRING,
            signature
        );
        emit Settled(permit.permitted.token, owner, witness.to, amount);
    }
}
